"""`run_experiment`: one call from a config to a finished run on Flower's simulation engine;
`resume_experiment` continues a stopped one from its checkpoint.

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
from fedrlprune.experiments.checkpoint import CHECKPOINT, check_resumable
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
    if (out / CHECKPOINT).exists():
        raise FedRLPruneError(
            f"{out} holds a stopped run: continue it with `fedrlprune run --resume {out}` "
            "(Python: resume_experiment), or pick another --out folder"
        )

    summaries: list[dict[str, Any]] = []
    server = make_server_app(
        cfg, out, model_fn=model_fn, data=dataset, live=live, on_summary=summaries.append
    )
    client = make_client_app(model_fn=model_fn, data=dataset)
    _run_simulation(server, client, cfg.clients)
    if not summaries:
        raise FedRLPruneError(f"the run stopped before it finished; see {out / 'run.log'}")
    return summaries[0]


def resume_experiment(
    results: str | Path,
    *,
    config: Config | None = None,
    model_fn: ModelFactory | None = None,
    data: UserData | None = None,
    live: bool | None = None,
) -> dict[str, Any]:
    """Continue a stopped run in `results` from its last checkpoint; return its summary.

    The config is the folder's `config.toml`; `config`, when given, must equal it (a changed
    config would not be the same run). A run with your own model or data needs them again.
    """
    out = Path(results)
    cfg, run = check_resumable(out, config)
    dataset = user_dataset(data) if data is not None else None
    summaries: list[dict[str, Any]] = []
    server = make_server_app(
        cfg,
        out,
        model_fn=model_fn,
        data=dataset,
        live=live,
        on_summary=summaries.append,
        resume=run,
    )
    client = make_client_app(model_fn=model_fn, data=dataset)
    _run_simulation(server, client, cfg.clients)
    if not summaries:
        raise FedRLPruneError(
            f"the run stopped again before it finished; see {out / 'run.log'}, then resume again"
        )
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
    """Share one Ray instance and its client actors among the runs made inside (the bench).

    Why: a bench is many short runs, and on a loaded 2-core machine each run spent 20-30 s
    before its first round, starting Ray (about 8 s) and client actors that import torch and
    Flower. Flower 1.41 starts Ray only when none is running but always calls `ray.shutdown()`
    after a run and terminates its actors. Inside this block both are deferred to the block's
    end: an actor a run leaves idle serves the next run's pool. An actor holds no run state of
    its own (Flower passes the ClientApp with every message, and our client app drops an
    earlier run's clients when the config changes), so results do not depend on the reuse.
    """
    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    started = not ray.is_initialized()
    if started:
        pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONPATH"] = pythonpath  # what Flower gives its workers, too
        ray.init(
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            **_ray_init_args(),
        )
    idle: list[Any] = []
    patched = {
        (ray, "shutdown"): lambda *args, **kwargs: None,
        (BasicActorPool, "add_actors_to_pool"): _reusing_add(idle),
        (BasicActorPool, "terminate_all_actors"): _keeping_terminate(idle),
    }
    saved = {target: getattr(*target) for target in patched}
    for (owner, name), value in patched.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)
        for actor in idle:
            actor.terminate.remote()
        if started:
            ray.shutdown()


def _reusing_add(idle: list[Any]) -> Any:
    def add_actors_to_pool(pool: Any, num_actors: int) -> None:
        for _ in range(num_actors):
            pool.pool.append(idle.pop() if idle else pool.create_actor_fn())
        pool.num_actors += num_actors

    return add_actors_to_pool


def _keeping_terminate(idle: list[Any]) -> Any:
    def terminate_all_actors(pool: Any) -> None:
        idle.extend(pool.pool)  # idle actors wait for the next run
        pool.pool.clear()
        for actor in pool._future_to_actor.values():  # busy ones (a run that failed) go
            actor.terminate.remote()
        pool._future_to_actor.clear()

    return terminate_all_actors


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
