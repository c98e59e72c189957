"""The run configuration: one typed object from the command line to every part of a run.

Every key is declared once, in `Config`, with its type, default, allowed values and help text;
TOML files, `--set key=value` overrides, Flower's run config and Python dicts all pass through
`Config.from_dict`, so a wrong key, type or value is refused the same way everywhere, before
anything runs.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from fedrlprune.data.loaders import DATASETS, USER_DATA
from fedrlprune.data.partition import PARTITIONS
from fedrlprune.devices import TIERS, assign_tiers
from fedrlprune.errors import ConfigError
from fedrlprune.federation.aggregation import RULES, UNKEPT
from fedrlprune.methods import METHODS
from fedrlprune.pruning.masks import MODES
from fedrlprune.rl.agent import TARGETS
from fedrlprune.rl.env import ACTIONS, REWARDS
from fedrlprune.rl.federation import POLICIES
from fedrlprune.training import LR_SCHEDULES

# The merge rule each method's paper uses, where it is not the mask vote (`aggregation = "auto"`).
OWN_RULES = ", ".join(
    [f"{m.aggregation} for {name}" for name, m in METHODS.items() if m.aggregation != "vote"]
    + ["vote otherwise"]
)
# Keys that were renamed: an old config gets told what to write instead.
# What `prune_mode = "auto"` runs for each method.
AUTO_MODES = (
    "structured for "
    + ", ".join(n for n, m in METHODS.items() if m.default_mode == "structured")
    + ", unstructured for the rest; "
    + ", ".join(n for n, m in METHODS.items() if m.always_structured)
    + " are structured whatever this says"
)

RENAMED = {
    "rl_federated": 'rl_policy = "federated" (was true) or "local" (was false)',
}


def _key(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a config key: its default, its help line and what values it allows."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Same config and seed, same partitions, same result."""

    dataset: str = _key(
        "fashion-mnist",
        f"dataset to train on (`{USER_DATA}`: a run given your own data from Python)",
        choices=(*DATASETS, USER_DATA),
    )
    data_path: str = _key(
        "", "folder (or .npz file) holding the dataset; empty = search standard places"
    )
    synthetic_alpha: float = _key(
        1.0,
        "`synthetic`: FedProx's alpha, meant to spread the clients' models (u_k ~ N(0, alpha), "
        "W_k and b_k ~ N(u_k, 1)); as published, u_k shifts every class's logit alike, so it "
        "changes no label (docs/data.md)",
        lo=0.0,
        hi=100.0,
    )
    synthetic_beta: float = _key(
        1.0,
        "`synthetic`: FedProx's beta, how much the clients' inputs differ (B_k ~ N(0, beta), "
        "each client's input mean ~ N(B_k, 1))",
        lo=0.0,
        hi=100.0,
    )
    model: str = _key(
        "cnn",
        "model from the registry (the Python API also takes your own nn.Module, recorded as "
        "`user`)",
    )
    method: str = _key("fedrlprune", "federated method to run", choices=tuple(METHODS))
    clients: int = _key(20, "number of clients (the data is split among them)", lo=1, hi=10_000)
    rounds: int = _key(20, "federated rounds", lo=1, hi=100_000)
    fraction: float = _key(
        1.0, "share of clients selected each round (at least one)", lo=0.0, hi=1.0, lo_open=True
    )
    local_epochs: int = _key(1, "local epochs per round on each selected client", lo=1, hi=1_000)
    batch_size: int = _key(32, "local mini-batch size", lo=1, hi=65_536)
    lr: float = _key(0.05, "local SGD learning rate", lo=0.0, hi=10.0, lo_open=True)
    lr_schedule: str = _key(
        "constant",
        "local learning rate over the rounds: `constant`, or `cosine` (from `lr` in round 1 "
        "down a half cosine toward 0 after the last round)",
        choices=LR_SCHEDULES,
    )
    momentum: float = _key(0.9, "local SGD momentum (reset every round)", lo=0.0, hi=0.999)
    weight_decay: float = _key(0.0, "local SGD weight decay", lo=0.0, hi=1.0)
    max_grad_norm: float = _key(
        1.0,
        "clip each local step's gradient norm to this (0 = no clipping); 1 as in HeteroFL's "
        "and FedRolex's code: a freshly pruned model's first steps can diverge without it",
        lo=0.0,
        hi=1e6,
    )
    bn_refresh: bool = _key(
        True,
        "after local training, recompute every BatchNorm's running statistics in one no-grad "
        "pass over the client's training data (its forward cost counted in the device time), "
        "so they match the weights as trained; models without BatchNorm are unaffected",
    )
    partition: str = _key(
        "dirichlet",
        "how the data is split among clients; `natural` (each client holds the samples "
        "generated for it) is `synthetic`'s and only its",
        choices=PARTITIONS,
    )
    alpha: float = _key(
        0.5, "Dirichlet concentration (smaller = more label skew)", lo=0.0, hi=1e6, lo_open=True
    )
    classes_per_client: int = _key(2, "classes per client for `pathological`", lo=1, hi=1_000)
    val_fraction: float = _key(0.1, "share of each client's data kept for validation", lo=0, hi=0.5)
    test_fraction: float = _key(0.1, "share of each client's data kept for its test", lo=0, hi=0.5)
    data_fraction: float = _key(
        0.5,
        "share of each split kept (half of Fashion-MNIST keeps the main job to minutes)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
    )
    prune_rate: float = _key(
        0.8,
        "`magnitude`, `lotteryfl`: final sparsity of every pruned layer; `feddst`: its sparsity "
        "over the pruned layers, spread by `feddst_distribution`",
        lo=0.0,
        hi=0.99,
    )
    prune_mode: str = _key(
        "auto",
        f"prune single weights or whole channels/neurons; `auto` = the method's own ({AUTO_MODES})",
        choices=("auto", *MODES),
    )
    prune_start: float = _key(
        0.1,
        "share of the rounds before the first pruning round (`fedrlprune`, `uniform`, `lamp`: "
        "a client prunes to its budget when first selected; pruning rounds reallocate it)",
        lo=0,
        hi=1,
    )
    prune_until: float = _key(
        0.5,
        "share of the rounds over which pruning rounds run (the ramp to the final rate of "
        "`magnitude`)",
        lo=0,
        hi=1,
        lo_open=True,
    )
    prune_every: int = _key(1, "a pruning round every N rounds until `prune_until`", lo=1)
    prune_skip: str = _key(
        "head", "layers left dense: `head` (the classifier), a comma list of names, or empty"
    )
    aggregation: str = _key(
        "auto",
        "how sparse client models merge (docs/methods.md); `auto` = the method's own rule "
        f"({OWN_RULES})",
        choices=("auto", *RULES),
    )
    unkept: str = _key(
        "previous",
        "value of a weight no client kept: previous global value or zero",
        choices=UNKEPT,
    )
    vote_threshold: float = _key(
        0.1,
        "share of a round's clients that must keep a weight for the global mask: 0.1 is close "
        "to the union, so a client with a large budget is not cut down to what small ones keep, "
        "but drops a weight one client in twenty keeps, trained on that client's data alone",
        lo=0,
        hi=1,
    )
    server_sparsity: float = _key(
        0.0, "server re-prunes the global mask to at least this sparsity (0 = off)", lo=0, hi=0.99
    )
    device_mix: str = _key(
        "mixed", "device tiers of the clients: `mixed`, one tier, or a comma list (cycled)"
    )
    respect_budgets: bool = _key(
        False,
        "`magnitude`: clients also prune as much as their device budget demands (off: one "
        "rate for everyone, the traditional baseline; `fedrlprune` always keeps budgets)",
    )
    rl_episodes: int = _key(
        12,
        "`fedrlprune`: DQN episodes each exploring client trains per pruning round",
        lo=1,
        hi=10_000,
    )
    rl_explorers: int = _key(
        3,
        "`fedrlprune`: clients drawn each pruning round to train the policy (the others prune "
        "with it as it is); 0: every client",
        lo=0,
        hi=1_000_000,
    )
    rl_reward: str = _key(
        "acc_cost",
        "reward: accuracy minus loss minus cost, or AMC's -error*log(FLOPs)",
        choices=REWARDS,
    )
    rl_cost_weight: float = _key(
        0.0,
        "weight of the cost (mean share of the budget's FLOPs and params used) in `acc_cost`",
        lo=0,
        hi=100,
    )
    rl_lr: float = _key(1e-3, "learning rate of the Q-network", lo=0, hi=1, lo_open=True)
    rl_eps_start: float = _key(1.0, "exploration at the first pruning round", lo=0, hi=1)
    rl_eps_end: float = _key(0.05, "exploration at the last pruning round", lo=0, hi=1)
    rl_targets: str = _key(
        "bootstrap",
        "the DQN's targets: `bootstrap` (Double DQN from the target net) or `monte_carlo` "
        "(each step regressed on its episode's return, the ablation)",
        choices=TARGETS,
    )
    rl_actions: str = _key(
        "relative",
        "what the policy's action is: `relative`, a factor on each layer's kept share at the "
        "level where one rate for all layers fills the budget (all 1 is `uniform`); `rates`, "
        "the layer's pruning rate itself (AMC's action, the ablation)",
        choices=ACTIONS,
    )
    rl_policy: str = _key(
        "federated",
        "`federated`: average the clients' Q-networks into one policy; `local`: each client "
        "keeps its own agent; `central`: one agent trained on one client only, used by all",
        choices=POLICIES,
    )
    lottery_threshold: float = _key(
        0.2,
        "`lotteryfl`: a client prunes further once its validation accuracy exceeds this (the "
        "official `--prune_start_acc`)",
        lo=0,
        hi=1,
    )
    feddst_every: int = _key(
        10, "`feddst`: rounds between mask readjustments (shrunk for short runs)", lo=1
    )
    feddst_ratio: float = _key(
        0.5, "`feddst`: share of kept weights each client moves in a readjustment", lo=0, hi=1
    )
    feddst_distribution: str = _key(
        "erk", "`feddst`: how `prune_rate` spreads over the layers", choices=("erk", "uniform")
    )
    regrow: bool = _key(
        True,
        "`fedrlprune`, `uniform`, `lamp`: each pruning round re-prunes from the global model "
        "under the global mask, so weights pruned too early can come back (false: a client's "
        "mask only shrinks)",
    )
    train_core: bool = _key(
        True,
        "`fedrlprune`, `uniform`, `lamp`: every client also trains the core (the weights all "
        "clients keep) as a model of its own in each step, so the smallest devices' models "
        "work alone, not only inside larger ones (the sandwich rule of slimmable networks)",
    )
    heldout_clients: int = _key(
        0,
        "clients that train neither the model nor the policy: at the end they get both and "
        "prune for their own budget (zero-shot)",
        lo=0,
    )
    heldout_tier: str = _key(
        "",
        "a device tier whose clients are all held out as `heldout_clients` are (those are then "
        "drawn among the other tiers), so the policy must serve a budget level no training "
        "client had; empty: none",
        choices=("", *TIERS),
    )
    eval_every: int = _key(1, "evaluate the global model every N rounds (and the last)", lo=1)
    round_timeout: float = _key(
        0.0,
        "seconds the server waits for a round's replies; clients that have not answered by "
        "then are dropped from the round (0 = wait for every client)",
        lo=0,
    )
    max_failed_rounds: int = _key(
        3,
        "stop the run with an error after this many rounds in a row in which no client's "
        "update was accepted (0 = never stop)",
        lo=0,
        hi=100_000,
    )
    min_clients: int = _key(
        1,
        "accepted replies a round needs to update the global model and policy; with fewer "
        "the round keeps the previous ones (at most the clients selected per round)",
        lo=1,
    )
    node_wait: float = _key(
        120.0,
        "real devices (`flwr run`): seconds the server waits for `clients` SuperNodes to be "
        "online, and again for them to load their data, before round 1; simulated clients "
        "(`fedrlprune run`, the Python API) are waited for however long they take",
        lo=0.0,
        lo_open=True,
    )
    latency_runs: int = _key(
        200,
        "at the end of a run, each deployed model shape and the dense model are timed with "
        "ONNX Runtime (one thread, batch 1, median of this many calls after a warm-up); 0 skips "
        "the measurement",
        lo=0,
        hi=100_000,
    )
    seed: int = _key(0, "seed of partitions, sampling, initial weights and training", lo=0)

    # ----------------------------------------------------------------------------- building

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: Config | None = None) -> Config:
        """Build a config from plain values, refusing unknown keys, wrong types and ranges."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        renamed = [f"{k!r} is gone: write {RENAMED[k]}" for k in unknown if k in RENAMED]
        if renamed:
            raise ConfigError("; ".join(renamed) + ".")
        if unknown:
            raise ConfigError(
                f"unknown config key(s): {', '.join(unknown)}. "
                f"Known keys: {', '.join(known)} (see `fedrlprune keys`)."
            )
        checked = {name: _check(known[name], value) for name, value in values.items()}
        cfg = dataclasses.replace(base or cls(), **checked)
        if cfg.mode not in METHODS[cfg.method].modes:
            raise ConfigError(
                f"method {cfg.method!r} prunes single weights, as its paper does; set "
                'prune_mode = "unstructured" (or use method fedmp for structured sub-models)'
            )
        return _check_together(cfg)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
        """Read a TOML file (optional) and apply `key=value` overrides on top, in order."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_toml(Path(path)))
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r} is not of the form key=value, e.g. rounds=5")
            values[key.strip()] = _parse_override(key.strip(), raw.strip())
        return cls.from_dict(values)

    def heldout_count(self) -> int:
        """How many clients are held out: `heldout_clients` and every client of `heldout_tier`."""
        tiers = assign_tiers(self.clients, self.device_mix, self.seed) if self.heldout_tier else []
        return self.heldout_clients + tiers.count(self.heldout_tier)

    def per_round(self) -> int:
        """Clients selected each round: `fraction` of those not held out, at least one."""
        return max(1, round(self.fraction * (self.clients - self.heldout_count())))

    def skip_list(self) -> list[str] | None:
        """`prune_skip` as `pruning_targets` takes it: None = the head, [] = nothing."""
        if self.prune_skip.strip() == "head":
            return None
        return [name.strip() for name in self.prune_skip.split(",") if name.strip()]

    def aggregation_rule(self) -> str:
        """The rule the server merges with: `aggregation`, or the method's own for `auto`."""
        if self.aggregation != "auto":
            return self.aggregation
        return METHODS[self.method].aggregation

    @property
    def structured(self) -> bool:
        """Whether masks remove whole channels: `prune_mode`, or always for FedMP's
        sub-models."""
        return self.mode == "structured" or METHODS[self.method].always_structured

    @property
    def mode(self) -> str:
        """`prune_mode` with `auto` resolved to the method's own mode."""
        return METHODS[self.method].default_mode if self.prune_mode == "auto" else self.prune_mode

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; a missing or malformed file is a ConfigError."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    # A `[fedrlprune]` table is accepted so the keys can live in a larger TOML file.
    table = data.get("fedrlprune", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [fedrlprune] must be a table of keys")
    return table


def describe_keys() -> list[tuple[str, str, str, str]]:
    """(key, type, default, allowed values and meaning) rows, for `fedrlprune keys` and docs."""
    rows = []
    for f in dataclasses.fields(Config):
        rows.append((f.name, _type_of(f).__name__, repr(f.default), _allowed(f)))
    return rows


def keys_markdown() -> str:
    """The config keys as the README's markdown table, so the README can be checked against it."""
    lines = ["| key | type | default | meaning and allowed values |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | `{d}` | {m} |" for k, t, d, m in describe_keys()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ checks


def _type_of(f: dataclasses.Field[Any]) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]


def _allowed(f: dataclasses.Field[Any]) -> str:
    meta = f.metadata
    parts = [meta["help"]]
    if meta["choices"]:
        parts.append("one of: " + ", ".join(meta["choices"]))
    if meta["lo"] is not None or meta["hi"] is not None:
        lo = "-inf" if meta["lo"] is None else f"{meta['lo']:g}"
        hi = "inf" if meta["hi"] is None else f"{meta['hi']:g}"
        parts.append(f"range {'(' if meta['lo_open'] else '['}{lo}, {hi}]")
    return "; ".join(parts)


def _check(f: dataclasses.Field[Any], value: Any) -> Any:
    """Return the value converted to the key's type, or raise a ConfigError naming the fix."""
    want = _type_of(f)
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(
            f"config key {f.name!r} must be a {want.__name__}, got {value!r} "
            f"({type(value).__name__}). Allowed: {_allowed(f)}."
        )
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(
            f"config key {f.name!r} = {value!r} is not allowed; "
            f"choose one of: {', '.join(meta['choices'])}."
        )
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    if too_low or (hi is not None and value > hi):
        raise ConfigError(f"config key {f.name!r} = {value!r} is out of range: {_allowed(f)}.")
    return value


def _check_together(cfg: Config) -> Config:
    """Checks that involve more than one key (each key alone is already in range)."""
    if cfg.dataset == "synthetic" and cfg.partition != "natural":
        raise ConfigError(
            f"dataset 'synthetic' comes split among clients by its generator (each client "
            f"holds the samples drawn from its own model), so partition {cfg.partition!r} "
            'cannot apply; set partition = "natural" (alpha and classes_per_client are unused).'
        )
    if cfg.partition == "natural" and cfg.dataset != "synthetic":
        raise ConfigError(
            f"partition 'natural' is the split dataset 'synthetic' is generated with; "
            f"{cfg.dataset!r} has none, so set partition to iid, dirichlet or pathological."
        )
    if cfg.heldout_count() >= cfg.clients:
        raise ConfigError(
            f"heldout_clients = {cfg.heldout_clients} and heldout_tier = {cfg.heldout_tier!r} "
            f"hold out {cfg.heldout_count()} of the {cfg.clients} clients, leaving none to "
            "train the model; hold out fewer."
        )
    if cfg.min_clients > cfg.per_round():
        raise ConfigError(
            f"config key 'min_clients' = {cfg.min_clients} is more than the {cfg.per_round()} "
            f"clients selected each round ({cfg.clients - cfg.heldout_count()} clients not held "
            f"out x fraction={cfg.fraction:g}), "
            "so no round could ever update the model; lower min_clients or raise fraction."
        )
    return cfg


def _parse_override(key: str, raw: str) -> Any:
    """Turn the text of `--set key=value` into the key's type (unknown keys pass through)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if key not in fields:
        return raw
    want = _type_of(fields[key])
    if want is str:
        return raw
    try:
        if want is bool:
            return {"true": True, "false": False}[raw.lower()]
        return want(raw)
    except (ValueError, KeyError):
        raise ConfigError(
            f"--set {key}={raw}: {key!r} must be a {want.__name__}. "
            f"Allowed: {_allowed(fields[key])}."
        ) from None
