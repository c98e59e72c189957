"""Progress of a run: a live rich display in a terminal, plain log lines everywhere else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("fedrlprune")
CONSOLE = Console(stderr=True)  # shared by the live display and the CLI's log handler

# A display that outlives single runs (the bench's), which a run's progress joins instead of
# starting its own: rich allows one live display at a time.
_SHARED: Progress | None = None


def _new_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=CONSOLE,
    )


@contextmanager
def shared_display(live: bool) -> Iterator[Progress | None]:
    """One live display for several runs (None when not live); runs inside add their bars."""
    global _SHARED
    if not live:
        yield None
        return
    progress = _new_progress()
    progress.start()
    _SHARED = progress
    try:
        yield progress
    finally:
        _SHARED = None
        progress.stop()


class RunProgress:
    """Rounds and the clients of the current round; `live=None` picks by whether stderr is a tty."""

    def __init__(self, rounds: int, title: str, live: bool | None = None) -> None:
        self.rounds = rounds
        self.title = title
        self.live = sys.stderr.isatty() if live is None else live
        self._progress: Progress | None = None
        self._round_task: TaskID | None = None
        self._client_task: TaskID | None = None
        self._own = False  # started the display itself (not a shared one): stops it too

    def __enter__(self) -> RunProgress:
        if _SHARED is not None:
            self._progress = _SHARED
        elif self.live:
            self._progress = _new_progress()
            self._progress.start()
            self._own = True
        if self._progress is not None:
            self._round_task = self._progress.add_task(self.title, total=self.rounds, info="")
            self._client_task = self._progress.add_task("  clients", total=1, info="")
        log.info("%s: %d rounds", self.title, self.rounds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is None:
            return
        if self._own:
            self._progress.stop()
        else:  # the shared display goes on; this run's bars leave it
            for task in (self._round_task, self._client_task):
                if task is not None:
                    self._progress.remove_task(task)

    def round_started(self, rnd: int, clients: int, what: str = "train") -> None:
        if self._progress is not None and self._client_task is not None:
            self._progress.reset(self._client_task, total=clients, info=what)

    def client_done(self) -> None:
        """One more of the round's clients answered (or failed: the round's log line says)."""
        if self._progress is not None and self._client_task is not None:
            self._progress.advance(self._client_task)

    def round_done(self, rnd: int, summary: str) -> None:
        if self._progress is not None and self._round_task is not None:
            self._progress.update(self._round_task, completed=rnd, info=summary)
        if self._progress is None:
            log.info("round %d/%d  %s", rnd, self.rounds, summary)
