"""`run_experiment`: one call from a config to a finished run on Flower's simulation engine;
`resume_experiment` continues a stopped one from its checkpoint.

The CLI is a thin layer over this; researchers call it directly with their own model or data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrlprune.config import Config
from fedrlprune.data.federated import federate, federate_named
from fedrlprune.data.loaders import USER_DATA, ArrayDataset
from fedrlprune.data.user import UserData, user_dataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.experiments.results import default_out_dir
from fedrlprune.federation.checkpoint import CHECKPOINT, RunState, check_resumable
from fedrlprune.fl.client_app import make_client_app
from fedrlprune.fl.server_app import make_server_app
from fedrlprune.fl.simulation import run_simulation, simulated_nodes_for
from fedrlprune.models import ModelFactory
from fedrlprune.models.zoo import USER_MODEL


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
    dataset = user_dataset(data) if data is not None else None
    cfg = as_run(_as_config(config), model_fn, dataset)
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    check_new_folder(out)

    summary = _simulate(cfg, out, model_fn, dataset, live)
    if summary is None:
        raise FedRLPruneError(f"the run stopped before it finished; see {out / 'run.log'}")
    return summary


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
    dataset = user_dataset(data) if data is not None else None
    given = as_run(config, model_fn, dataset) if config is not None else None
    cfg, run = check_resumable(out, given)
    _check_given_again(cfg, model_fn, dataset, out)
    summary = _simulate(cfg, out, model_fn, dataset, live, run)
    if summary is None:
        raise FedRLPruneError(
            f"the run stopped again before it finished; see {out / 'run.log'}, then resume again"
        )
    return summary


def check_new_folder(out: Path, arg: str = "out_dir") -> None:
    """Refuse a folder that holds a run; `arg` is the folder's argument as the caller spells
    it (`--out` on the command line), so the fix names what the user can change."""
    if (out / "summary.json").exists():
        raise FedRLPruneError(f"{out} already holds a finished run; pick another {arg} folder")
    if (out / CHECKPOINT).exists():
        go_on = (
            f"fedrlprune run --resume {out}"
            if arg == "--out"
            else f"resume_experiment({str(out)!r})"
        )
        raise FedRLPruneError(
            f"{out} holds a stopped run: continue it with `{go_on}`, or pick another {arg} folder"
        )


def as_run(cfg: Config, model_fn: ModelFactory | None, dataset: ArrayDataset | None) -> Config:
    """The config as it runs: `model` and `dataset` say `user` where they were given from
    Python (unless the data is the dataset the config names), so config.toml, the log and the
    folder never claim a default that was not used, and a resume or export asks for them."""
    changes: dict[str, str] = {}
    if model_fn is not None:
        changes["model"] = USER_MODEL
    if dataset is not None and dataset.name != cfg.dataset:
        changes["dataset"] = USER_DATA
    return Config.from_dict({**cfg.to_dict(), **changes}) if changes else cfg


def _check_given_again(
    cfg: Config, model_fn: ModelFactory | None, dataset: ArrayDataset | None, out: Path
) -> None:
    """A run with your own model or data resumes only with them: say so before the engine
    starts, in the one place that can take them (Python)."""
    missing = [
        arg
        for arg, recorded, given in (
            ("model_fn", cfg.model == USER_MODEL, model_fn),
            ("data", cfg.dataset == USER_DATA, dataset),
        )
        if recorded and given is None
    ]
    if missing:
        args = ", ".join(f"{arg}=..." for arg in missing)
        raise FedRLPruneError(
            f"{out} is a run with your own {' and '.join(missing)}: resume it from Python with "
            f"them again, resume_experiment({str(out)!r}, {args})"
        )


def _simulate(
    cfg: Config,
    out: Path,
    model_fn: ModelFactory | None,
    dataset: ArrayDataset | None,
    live: bool | None,
    resume: RunState | None = None,
) -> dict[str, Any] | None:
    """The run on Flower's simulation engine; its summary, None if it stopped early, or the
    error that stopped it raised again (a run whose clients all fail, RunFailed). The
    clients' partitions are computed first, so a config that cannot be split (more clients
    than samples) is refused here, before any worker starts."""
    if dataset is not None:
        federate(cfg, dataset)  # raises DataError, naming the fix
    else:
        federate_named(cfg)
    results: list[dict[str, Any] | FedRLPruneError] = []
    server = make_server_app(
        cfg,
        out,
        model_fn=model_fn,
        data=dataset,
        live=live,
        on_result=results.append,
        resume=resume,
    )
    nodes = simulated_nodes_for(cfg.clients, cfg.per_round())
    run_simulation(server, make_client_app(model_fn=model_fn, data=dataset), nodes)
    result = results[0] if results else None
    if isinstance(result, FedRLPruneError):
        raise result  # raised in the engine's thread, where it would only be logged
    return result


def _as_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, str | Path):
        return Config.load(config)
    return Config.from_dict(config)
