"""What the bench runs: the methods it knows (name -> config overrides) and its suites.

This is the one table that says what a method name means; `fedrlprune bench`, its tests and
BENCHMARKS.md all read it from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedrlprune.config import Config
from fedrlprune.errors import ConfigError
from fedrlprune.methods import METHODS as REGISTRY

# The budgeted methods run structured, so their deployed models are compact and their FLOPs
# and latency real; the rest run as their papers do. Each run's `flops_kind` then puts it in
# the budgeted (compact) table or the unstructured (theoretical) one (bench/table.py).
_STRUCTURED: dict[str, Any] = {"prune_mode": "structured"}
BUDGETED = ("fedrlprune", "uniform", "lamp")
# The bench's variants of the method: the method unstructured (beside the unstructured
# baselines), and its ablations, structured like the method.
VARIANTS: dict[str, dict[str, Any]] = {
    "fedrlprune-unstructured": {"method": "fedrlprune", "prune_mode": "unstructured"},
    "rl-local": {"method": "fedrlprune", "rl_policy": "local", **_STRUCTURED},
    "rl-central": {"method": "fedrlprune", "rl_policy": "central", **_STRUCTURED},
    "fedrlprune-naive": {"method": "fedrlprune", "aggregation": "naive", **_STRUCTURED},
}
# Bench name -> config overrides: every registered method (the reference first, the method
# last, as the tables read), then the variants. A name whose overrides this version's Config
# refuses is reported as unknown to this version, never silently dropped.
ORDER = sorted(REGISTRY, key=lambda m: (m != "fedavg", m == "fedrlprune"))
METHODS: dict[str, dict[str, Any]] = {
    m: {"method": m, **(_STRUCTURED if m in BUDGETED else {})} for m in ORDER
} | VARIANTS


@dataclass(frozen=True)
class Setup:
    """One dataset-model setting every method runs on, with `seeds` seeds (0 .. seeds-1)."""

    name: str
    overrides: Mapping[str, Any]
    seeds: int
    why: str  # why these sizes: what they keep and what they give up
    # The methods this setup runs, where it cannot afford them all (None: the suite's).
    methods: tuple[str, ...] | None = None

    @property
    def dataset(self) -> str:
        return str(self.overrides["dataset"])

    def settings(self) -> str:
        """The setup's config keys as one line (the bench's sections and BENCHMARKS.md)."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items())


@dataclass(frozen=True)
class Suite:
    name: str
    setups: tuple[Setup, ...]
    about: str
    methods: tuple[str, ...] = field(default=tuple(METHODS))
    max_minutes: float = 0.0  # start no run after this (0: no limit); see run_bench


# Settings shared by every setup of both suites: the heterogeneity (Dirichlet 0.5 over
# mixed device tiers) and one local epoch, because on a shared 2-core CPU the suite's time goes
# to local training and evaluation.
_COMMON: dict[str, Any] = {"partition": "dirichlet", "alpha": 0.5, "device_mix": "mixed"}

QUICK = Suite(
    name="quick",
    about=(
        "every method at the smallest scale that still runs every code path: digits with the "
        "MLP, 4 clients, 2 rounds, 1 seed. It checks the bench, not the methods: two rounds "
        "are far from convergence and the figures say nothing about which method is better."
    ),
    setups=(
        Setup(
            name="digits-mlp",
            overrides={
                **_COMMON,
                "dataset": "digits",
                "model": "mlp",
                "clients": 4,
                "rounds": 2,
                "local_epochs": 1,
                "lr": 0.1,
                "rl_episodes": 4,
            },
            seeds=1,
            why="4 clients, 2 rounds, 4 DQN episodes per pruning round: minutes for all methods",
        ),
    ),
)

# Sizes from dense FedAvg calibration runs on the 2-core CPU this was written on (commands and
# figures in BENCHMARKS.md): each Fashion-MNIST setup ends within 2 points of its model's
# full-size accuracy. The microcontroller tier is left out on LeNet-5: its share (3% of 61,706
# params) is below what structured pruning can reach there with the head kept whole, so every
# budgeted method would be scored on a budget none can keep.
_FMNIST_LENET5: dict[str, Any] = {
    **_COMMON,
    "device_mix": "sbc,phone,laptop",
    "dataset": "fashion-mnist",
    "model": "lenet5",
    "clients": 20,
    "fraction": 0.5,
    "rounds": 20,
    "local_epochs": 2,
    "lr": 0.05,
    "data_fraction": 0.5,
    "eval_every": 2,
    "rl_episodes": 8,
}
# The methods of the comparison; the bench's ablations of fedrlprune (rl-local, rl-central,
# fedrlprune-naive) run over three seeds on the headline setting (benchmarks/headline.py), and
# here only when named with --methods.
_COMPARED = tuple(m for m in METHODS if m not in ("rl-local", "rl-central", "fedrlprune-naive"))
STANDARD = Suite(
    name="standard",
    about=(
        "the published comparison at sizes where dense FedAvg converges on Fashion-MNIST: "
        "about 2.5 hours on a 2-core CPU in all (MNIST and CIFAR-10 add their own when their "
        "files are present). One command starts no run that would likely end after 85 minutes "
        "and lists the rest as not run; the same command again reads the finished runs back "
        "and goes on, so two or three calls finish it. Runs go seed by seed, so a cut falls "
        "on the last seeds, never on a method."
    ),
    max_minutes=85.0,
    methods=_COMPARED,
    # Within a seed the cheap setups go first, so a budget cut falls on the CNN's last seed.
    setups=(
        Setup(
            name="fmnist-lenet5",
            overrides=_FMNIST_LENET5,
            seeds=3,
            why=(
                "20 clients of the sbc, phone and laptop tiers, half of them each round, 20 "
                "rounds of two epochs on half of Fashion-MNIST (about 1,500 training samples "
                "per client, 5,000 test images): dense FedAvg ended at 0.864 in one seed-0 "
                "calibration run (LeNet-5's full-size figure: 0.879)"
            ),
        ),
        Setup(
            name="digits-mlp",
            overrides={
                **_COMMON,
                "dataset": "digits",
                "model": "mlp",
                "clients": 10,
                "rounds": 20,
                "local_epochs": 1,
                "lr": 0.1,
                "rl_episodes": 12,
            },
            seeds=3,
            why=(
                "scikit-learn's digits (no files needed) as a second public dataset; 12 DQN "
                "episodes a pruning round, since an agent learns once it holds 16 transitions "
                "(one per pruned layer and episode) and the MLP has 2 pruned layers"
            ),
        ),
        Setup(
            name="synthetic-mlp",
            overrides={
                "partition": "natural",
                "device_mix": "mixed",
                "dataset": "synthetic",
                "synthetic_alpha": 1.0,
                "synthetic_beta": 1.0,
                "data_fraction": 1.0,
                "model": "mlp",
                "clients": 30,
                "rounds": 30,
                "local_epochs": 1,
                "lr": 0.05,
                "rl_episodes": 12,
            },
            seeds=3,
            why=(
                "FedProx's Synthetic(1,1) (no files needed) with its own split over its 30 "
                "clients (50 to 5,162 samples each at seed 0); every client in every round, "
                "where dense FedAvg reached 0.90 by round 23 and 0.914 at round 30 in one "
                "seed-0 run, while with 10 of 30 a round (FedProx's sampling) it swung between "
                "0.10 and 0.63 for 60 rounds; 12 DQN episodes a pruning round, as on digits"
            ),
        ),
        Setup(
            name="fmnist-cnn",
            overrides={
                **_COMMON,
                "dataset": "fashion-mnist",
                "model": "cnn",
                "clients": 20,
                "fraction": 0.5,
                "rounds": 20,
                "local_epochs": 1,
                "lr": 0.05,
                "data_fraction": 0.5,
                "eval_every": 2,
                "rl_episodes": 8,
            },
            seeds=3,
            why=(
                "the headline setting with half of the clients in each round, which halves a "
                "run (about 2 minutes dense): 20 rounds of one epoch on half of Fashion-MNIST; "
                "dense FedAvg reached 0.861 at round 16 in one seed-0 calibration run (the "
                "FedAvg CNN's full-size figure: 0.865; 0.880 on the headline setting)"
            ),
        ),
        Setup(
            name="fmnist-lenet5-100",
            overrides={
                **_COMMON,
                "device_mix": "sbc,phone,laptop",
                "dataset": "fashion-mnist",
                "model": "lenet5",
                "clients": 100,
                "fraction": 0.1,
                "rounds": 150,
                "local_epochs": 2,
                "lr": 0.1,
                "data_fraction": 0.5,
                "eval_every": 10,
                "rl_episodes": 4,
            },
            seeds=1,
            methods=("fedavg", "heterofl", "fedrolex", "uniform", "lamp", "fedrlprune"),
            why=(
                "the literature's scale (100 clients, 10 a round; FIARSE, FedRTS and NeFL run "
                "500-800 rounds): 150 rounds of two epochs on half of Fashion-MNIST (about 240 "
                "training samples per client) at lr 0.1, the budgeted methods only and 1 seed, "
                "since one run takes minutes: dense FedAvg ended at 0.859 (0.865 at round 110) "
                "in one seed-0 run at these settings, 230 s beside another run"
            ),
        ),
        Setup(
            name="mnist-lenet5",
            overrides={**_FMNIST_LENET5, "dataset": "mnist"},
            seeds=1,
            why="runs when MNIST's files are present: fmnist-lenet5's settings, 1 seed",
        ),
        Setup(
            name="cifar10-vgg11",
            overrides={
                **_COMMON,
                "dataset": "cifar10",
                "model": "vgg11",
                "clients": 20,
                "fraction": 0.5,
                "rounds": 6,
                "local_epochs": 1,
                "data_fraction": 0.01,
                "eval_every": 2,
                "rl_episodes": 2,
            },
            seeds=1,
            why=(
                "runs when CIFAR-10's files are present; VGG-11 on a CPU: 1% of the data, 6 "
                "rounds, 1 seed (a smoke comparison, far from convergence)"
            ),
        ),
    ),
)

SUITES: dict[str, Suite] = {s.name: s for s in (QUICK, STANDARD)}


def pick_setups(suite: Suite, names: Iterable[str] | None) -> Suite:
    """The suite with only the named setups (None: all); a wrong name lists the suite's setups."""
    wanted = [n.strip() for item in names or () for n in item.split(",") if n.strip()]
    if not wanted:
        return suite
    known = [s.name for s in suite.setups]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(
            f"suite {suite.name!r} has no setup {', '.join(map(repr, unknown))}; "
            f"its setups: {', '.join(known)}"
        )
    return replace(suite, setups=tuple(s for s in suite.setups if s.name in wanted))


def get_suite(name: str) -> Suite:
    """The suite called `name`; a wrong name lists the suites there are."""
    try:
        return SUITES[name]
    except KeyError:
        raise ConfigError(
            f"unknown bench suite {name!r}; use one of: {', '.join(SUITES)}"
        ) from None


def parse_methods(names: Iterable[str] | None) -> tuple[str, ...]:
    """Method names from the command line (repeatable, comma lists allowed), checked, in order.

    None or empty means every method. A name the bench does not know is refused with the list
    of names it does know (a name it knows but this version cannot run is reported per run).
    """
    wanted = [n.strip() for item in names or () for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown bench method(s) {', '.join(map(repr, unknown))}; "
            f"use any of: {', '.join(METHODS)}"
        )
    return tuple(dict.fromkeys(wanted)) or tuple(METHODS)


def run_config(setup: Setup, method: str, seed: int, extra: Sequence[str] = ()) -> Config:
    """The config of one bench run: the setup, then `--set` extras, then the method, then seed.

    The setup's own keys are checked first, so a broken suite is an error of the suite; only the
    method's overrides can make a run "unknown to this version" (see `method_unavailable`).
    """
    cfg = Config.from_dict(setup.overrides)
    if extra:  # `--set` values, parsed to their keys' types as `fedrlprune run` parses them
        parsed = Config.load(None, list(extra))
        keys = {item.partition("=")[0].strip() for item in extra}
        cfg = Config.from_dict({k: getattr(parsed, k) for k in keys}, base=cfg)
    return Config.from_dict({**METHODS[method], "seed": seed}, base=cfg)


def method_unavailable(method: str) -> str | None:
    """Why this version cannot run `method` (its overrides refused by Config), or None."""
    try:
        Config.from_dict(METHODS[method])
    except ConfigError as err:
        return f"unknown to this version of fedrlprune ({err})"
    return None
