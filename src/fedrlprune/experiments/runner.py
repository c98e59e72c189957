"""`run_experiment`: one call from a config to a finished run on Flower's simulation engine.

The CLI is a thin layer over this; researchers call it directly with their own model or data.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedrlprune.config import Config
from fedrlprune.data.user import UserData, user_dataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.experiments.results import default_out_dir
from fedrlprune.fl.client_app import make_client_app
from fedrlprune.fl.server_app import make_server_app
from fedrlprune.models import ModelFactory

log = logging.getLogger("fedrlprune")


def run_experiment(
    config: Config | Mapping[str, Any] | str | Path | None = None,
    *,
    model_fn: ModelFactory | None = None,
    data: UserData | None = None,
    out_dir: str | Path | None = None,
    live: bool | None = None,
) -> dict[str, Any]:
    """Run one federated experiment and return its summary (also written to `summary.json`).

    config:   a Config, a dict of config keys, a TOML file path, or None for the defaults.
    model_fn: your own model, as `model_fn(input_shape, num_classes) -> nn.Module`.
    data:     your own data: (x_train, y_train, x_test, y_test) arrays, a pair of torch
              Datasets (train, test) yielding (x, y), or an ArrayDataset.
    out_dir:  the results folder (default: a fresh timestamped folder under results/).
    live:     a live progress display (default: when stderr is a terminal).
    """
    cfg = _as_config(config)
    dataset = user_dataset(data) if data is not None else None
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    if (out / "summary.json").exists():
        raise FedRLPruneError(f"{out} already holds a finished run; pick another --out folder")

    summaries: list[dict[str, Any]] = []
    server = make_server_app(
        cfg, out, model_fn=model_fn, data=dataset, live=live, on_summary=summaries.append
    )
    client = make_client_app(model_fn=model_fn, data=dataset)
    _run_simulation(server, client, cfg.clients)
    if not summaries:
        raise FedRLPruneError(f"the run stopped before it finished; see {out / 'run.log'}")
    return summaries[0]


def _as_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, str | Path):
        return Config.load(config)
    return Config.from_dict(config)


def _ray_init_args() -> dict[str, Any]:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    return {"num_cpus": os.cpu_count() or 1, "logging_level": "error", "log_to_driver": False}


@contextmanager
def ray_session() -> Iterator[None]:
    """Share one Ray instance among the runs made inside (the bench's many short runs).

    Flower 1.41 starts Ray for a run only when none is running, but its backend always calls
    `ray.shutdown()` when the run ends; starting and stopping Ray costs about 8 s per run on a
    2-core machine. Inside this block that shutdown is deferred to the block's end. Each run
    still gets fresh client actors (Flower terminates them), so runs stay independent.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONPATH"] = pythonpath  # what Flower gives its workers, too
        ray.init(
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            **_ray_init_args(),
        )
    shutdown = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        ray.shutdown = shutdown  # type: ignore[assignment]
        if started:
            shutdown()


def _run_simulation(server: Any, client: Any, clients: int) -> None:
    """Flower's simulation engine (Ray), quiet: our own progress and logs say what happens."""
    from flwr.simulation import run_simulation

    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)
    backend = {
        "init_args": _ray_init_args(),
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            run_simulation(
                server_app=server,
                client_app=client,
                num_supernodes=clients,
                backend_config=backend,  # type: ignore[arg-type]
            )
    finally:
        flwr_log.setLevel(level)
