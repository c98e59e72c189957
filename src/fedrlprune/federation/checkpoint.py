"""The server's checkpoint: everything a stopped run needs to go on as if it had never stopped.

`checkpoint.npz` in the results folder is rewritten after every completed round and once more
after deployment. It holds arrays only (no pickle): the global model (`state/...`), the global
and per-client masks (`mask/global/...`, `mask/client<id>/...`, the layout `export` reads), the
method's own server state as named arrays (`method/...`, e.g. `fedrlprune`'s policies), and
one JSON string (`meta`) with the scalars: the round, the
config, the sampling generator's state, each client's seen rounds, the metrics and rates rows
written so far and the dropped clients. It is written to a temporary file and renamed, so a
server killed at any moment leaves either the previous checkpoint or the new one, never half.
`check_resumable` says whether a results folder holds a run that can go on, and if not why.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrlprune.config import Config
from fedrlprune.errors import FedRLPruneError
from fedrlprune.methods import METHODS
from fedrlprune.state import Masks, State

# The methods whose whole server state the checkpoint holds (others keep e.g. bandits).
RESUMABLE = tuple(name for name, method in METHODS.items() if method.resumable)
CHECKPOINT = "checkpoint.npz"
FORMAT = 2  # bump when the layout changes; older checkpoints are refused by name


@dataclass
class RunState:
    """The server's state after round `round` (`finished`: after deployment too)."""

    round: int
    config: dict[str, Any]
    state: State
    global_masks: Masks
    client_masks: dict[int, Masks]
    seen_rounds: dict[int, list[int]]
    method: dict[str, np.ndarray]  # the method's server state (`Method.snapshot`)
    rng_state: dict[str, Any]  # numpy bit generator state of the client sampling
    rows: list[dict[str, Any]]  # metrics.csv rows of rounds 1..round
    rates: list[dict[str, Any]]  # rates.csv rows of rounds 1..round
    dropped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds spent before this checkpoint, over every session
    finished: bool = False


def save_run_state(path: Path, run: RunState) -> None:
    """Write the checkpoint atomically: a temporary file in the same folder, then a rename."""
    arrays: dict[str, np.ndarray] = {f"state/{k}": v for k, v in run.state.items()}
    arrays |= {f"mask/global/{k}": v for k, v in run.global_masks.items()}
    for cid, masks in run.client_masks.items():
        arrays |= {f"mask/client{cid}/{k}": v for k, v in masks.items()}
    arrays |= {f"method/{k}": v for k, v in run.method.items()}
    meta = {
        "format": FORMAT,
        "round": run.round,
        "finished": run.finished,
        "config": run.config,
        "seen_rounds": {str(c): r for c, r in run.seen_rounds.items()},
        "rng_state": run.rng_state,
        "rows": run.rows,
        "rates": run.rates,
        "dropped": run.dropped,
        "failed": run.failed,
        "elapsed": run.elapsed,
    }
    arrays["meta"] = np.array(json.dumps(meta, default=_plain))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_run_state(path: Path) -> RunState:
    """Read a checkpoint back; a missing, cut-off or foreign file is a FedRLPruneError."""
    if not path.is_file():
        raise FedRLPruneError(
            f"{path} is missing: the run stopped before its first round finished, or this is "
            "not a results folder; start the run again (fedrlprune run --config "
            f"{path.parent / 'config.toml'})"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {meta.get('format')!r}, expected {FORMAT}")
        tree = _split(arrays)
        return RunState(
            round=int(meta["round"]),
            config=dict(meta["config"]),
            state=tree.get("state", {}).get("", {}),
            global_masks=tree.get("mask", {}).get("global", {}),
            client_masks=_by_client(tree.get("mask", {})),
            seen_rounds={int(c): [int(r) for r in v] for c, v in meta["seen_rounds"].items()},
            method=tree.get("method", {}).get("", {}),
            rng_state=meta["rng_state"],
            rows=list(meta["rows"]),
            rates=list(meta["rates"]),
            dropped=dict(meta["dropped"]),
            failed=[int(c) for c in meta["failed"]],
            elapsed=float(meta["elapsed"]),
            finished=bool(meta["finished"]),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise FedRLPruneError(
            f"{path} cannot be read ({type(err).__name__}: {err}); it was not written by this "
            "version of fedrlprune or was damaged after it was written. Start the run again "
            f"(fedrlprune run --config {path.parent / 'config.toml'}) in a new folder"
        ) from None


def check_resumable(out: Path, config: Config | None = None) -> tuple[Config, RunState]:
    """The config and checkpoint of a stopped run in `out`; FedRLPruneError naming the problem
    (not a results folder, finished, no or unreadable checkpoint, another config) and the fix."""
    if not (out / "config.toml").is_file():
        raise FedRLPruneError(
            f"{out} has no config.toml: --resume takes the results folder of a stopped run"
        )
    if (out / "summary.json").exists():
        raise FedRLPruneError(
            f"{out} holds a finished run (summary.json is written): there is nothing to resume"
        )
    cfg = Config.load(out / "config.toml")
    if cfg.method not in RESUMABLE:
        raise FedRLPruneError(
            f"{out} is a `{cfg.method}` run, which cannot resume yet (its server state is not "
            "all in the checkpoint, or resuming it is not tested); start it again. "
            f"Resumable methods: {', '.join(RESUMABLE)}"
        )
    run = load_run_state(out / CHECKPOINT)
    for other, what in ((run.config, "its checkpoint"), (config, "the config you gave")):
        if other is None:
            continue
        theirs = other if isinstance(other, dict) else other.to_dict()
        changed = config_changes(cfg.to_dict(), theirs)
        if changed:
            raise FedRLPruneError(
                f"{out / 'config.toml'} differs from {what}: {changed}. A resumed run keeps the "
                "config it started with: restore config.toml / drop --config and --set, or "
                "start a new run"
            )
    return cfg, run


def config_changes(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """The keys whose values differ, as `key: ours -> theirs`; empty when none does."""
    keys = sorted(set(ours) | set(theirs))
    return ", ".join(
        f"{k}: {ours.get(k)!r} -> {theirs.get(k)!r}" for k in keys if ours.get(k) != theirs.get(k)
    )


def _split(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """`kind/who/name` keys (`state/name` for the model) into kind -> who -> name -> array."""
    tree: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for key, value in arrays.items():
        kind, _, rest = key.partition("/")
        who, name = ("", rest) if kind in ("state", "method") else rest.split("/", 1)
        tree.setdefault(kind, {}).setdefault(who, {})[name] = value
    return tree


def _by_client(group: dict[str, dict[str, np.ndarray]]) -> dict[int, dict[str, np.ndarray]]:
    return {
        int(m.group(1)): v for who, v in group.items() if (m := re.fullmatch(r"client(\d+)", who))
    }


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones for JSON (rows hold a few)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
