"""Flower's simulation engine for `fedrlprune run` and the bench: one run, or many sharing one
Ray instance (`ray_session`)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _ray_init_args() -> dict[str, Any]:
    """This machine's cores; or, with RAY_ADDRESS set, the Ray cluster there (its machines
    bring their own cores, and Ray refuses a core count when it joins a cluster)."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"logging_level": "error", "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        return {"address": os.environ["RAY_ADDRESS"], **quiet}
    # No dashboard: its processes compete with the clients for the cores while a run starts.
    return {"num_cpus": os.cpu_count() or 1, "include_dashboard": False, **quiet}


_OPEN: list[bool] = []  # a session is open: a nested one joins it


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
    A session opened inside another joins it: a second pool of actors would wait for the cores
    the first one's idle actors hold.
    """
    if _OPEN:
        yield
        return
    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    started = not ray.is_initialized()
    if started:
        pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONPATH"] = pythonpath  # what Flower gives its workers, too
        ray.init(
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
    _OPEN.append(True)
    try:
        yield
    finally:
        _OPEN.clear()
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


def simulated_nodes_for(clients: int, per_round: int) -> int:
    """How many simulated SuperNodes a run needs: one per client of a round, not one per client,
    since every message names its client. Flower's engine asks every node for messages ten
    times a second, so 1000 idle nodes would keep a core busy for the whole run."""
    return min(clients, per_round)


def _not_a_client_error(record: logging.LogRecord) -> bool:
    """Drop the engine's own report of a ClientApp that raised (a traceback per client per
    round): the error reply carries it, and the round's one log line names the first."""
    return not record.pathname.endswith(os.path.join("fleet", "vce", "vce_api.py"))


def run_simulation(server: Any, client: Any, nodes: int) -> None:
    """Flower's simulation engine (Ray) with `nodes` simulated SuperNodes, quiet: our own
    progress and logs say what happens."""
    from flwr.simulation import run_simulation as flower_simulation

    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)
    flwr_log.addFilter(_not_a_client_error)
    backend = {
        "init_args": _ray_init_args(),
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            flower_simulation(
                server_app=server,
                client_app=client,
                num_supernodes=nodes,
                backend_config=backend,  # type: ignore[arg-type]
            )
    finally:
        flwr_log.setLevel(level)
        flwr_log.removeFilter(_not_a_client_error)
