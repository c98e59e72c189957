"""The results folder of one run: config, per-round metrics, summary, partitions, log, report.

Rows are appended to metrics.csv as rounds finish, so a run that stops early still leaves
everything it completed on disk; a resumed run first rewrites metrics.csv and rates.csv from
its checkpoint, so each round is there exactly once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from fedrlprune.config import Config
from fedrlprune.devices import TIERS
from fedrlprune.experiments.report import write_report

ROUND_COLUMNS = (
    "round",
    "clients_selected",
    "clients_replied",
    "clients_failed",
    "clients_dropped",
    "global_updated",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "sparsity",
    "nonzero_params",
    "effective_flops",
    "upload_bytes",
    "upload_vs_dense",
    "download_bytes",
    "round_seconds",
    "client_train_seconds_mean",
    "clients_compact",
    "client_compact_seconds_mean",
    "rl_seconds_mean",
    "rl_episodes",
    "rl_updates",
    "rl_evaluations",
    "sim_seconds",
    "sim_joules",
    "train_within_clients",
    *(f"train_{what}_{tier}" for tier in TIERS for what in ("ratio", "memory")),
)


def default_out_dir(cfg: Config, root: Path = Path("results")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return root / f"{cfg.method}-{cfg.dataset}-{cfg.model}-{stamp}"


class RunRecorder:
    """Writes the results files of one run into `out_dir` (created; must not hold a run)."""

    def __init__(
        self,
        out_dir: Path,
        cfg: Config,
        rows: list[dict[str, Any]] | None = None,
        rates: list[dict[str, Any]] | None = None,
    ) -> None:
        """A new run, or (given the `rows` and `rates` of a checkpoint) one that goes on."""
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.toml").write_text(cfg.to_toml())
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.rates: list[dict[str, Any]] = list(rates or [])
        self._csv = out_dir / "metrics.csv"
        _write_csv(
            self._csv, ROUND_COLUMNS, [[_cell(r.get(c)) for c in ROUND_COLUMNS] for r in self.rows]
        )
        if self.rates:
            head = list(self.rates[0])
            _write_csv(out_dir / "rates.csv", head, [[r[h] for h in head] for r in self.rates])
        else:
            (out_dir / "rates.csv").unlink(missing_ok=True)
        self._log_handler = logging.FileHandler(out_dir / "run.log")
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        for name in ("fedrlprune", "flwr"):
            logging.getLogger(name).addHandler(self._log_handler)
        logging.getLogger("fedrlprune").setLevel(logging.INFO)

    def add_round(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self._csv.open("a", newline="") as fh:
            csv.writer(fh).writerow([_cell(row.get(c)) for c in ROUND_COLUMNS])

    def add_rates(
        self, rnd: int, client: int, tier: str, heldout: bool, rates: dict[str, float]
    ) -> None:
        """The per-layer pruning rates a client chose this round (rates.csv)."""
        new = [
            {"round": rnd, "client": client, "tier": tier, "heldout": int(heldout),
             "layer": layer, "rate": rate}
            for layer, rate in rates.items()
        ]  # fmt: skip
        if not new:
            return
        path = self.out_dir / "rates.csv"
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(new[0]))
            if not self.rates:
                writer.writeheader()
            writer.writerows(new)
        self.rates += new

    def write_json(self, name: str, data: Any) -> None:
        (self.out_dir / name).write_text(json.dumps(_finite(data), indent=2) + "\n")

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write summary.json and the report; return the summary as written (NaN as None)."""
        summary = _finite(summary)
        self.write_json("summary.json", summary)
        write_report(self.out_dir, self.rows, summary, self.rates)
        self.close()
        return summary

    def close(self) -> None:
        for name in ("fedrlprune", "flwr"):
            logging.getLogger(name).removeHandler(self._log_handler)
        self._log_handler.close()


def _write_csv(path: Path, head: Any, rows: list[list[Any]]) -> None:
    """Write a whole CSV file atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        writer.writerows(rows)
    tmp.replace(path)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _finite(data: Any) -> Any:
    """JSON has no NaN: write null for a figure that could not be measured."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
