"""Config: every way in refuses unknown keys, wrong types and out-of-range values, clearly."""

from pathlib import Path

import pytest

from fedrlprune.config import Config, describe_keys
from fedrlprune.errors import ConfigError


def test_defaults_are_the_documented_default_run() -> None:
    cfg = Config()
    assert (cfg.dataset, cfg.model, cfg.method) == ("fashion-mnist", "cnn", "fedrlprune")
    assert (cfg.clients, cfg.rounds, cfg.partition, cfg.alpha) == (20, 20, "dirichlet", 0.5)
    assert (cfg.mode, cfg.structured, cfg.lr, cfg.max_grad_norm) == ("structured", True, 0.05, 1.0)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"clinets": 3}, ["clinets", "Known keys"]),
        ({"rounds": "5"}, ["rounds", "int", "'5'"]),
        ({"rounds": 2.5}, ["rounds", "int"]),
        ({"clients": True}, ["clients", "int"]),
        ({"fraction": 0.0}, ["fraction", "out of range", "(0, 1]"]),
        ({"fraction": 1.5}, ["fraction", "out of range"]),
        ({"lr": -0.1}, ["lr", "out of range"]),
        ({"clients": 0}, ["clients", "out of range"]),
        ({"partition": "random"}, ["partition", "iid", "dirichlet", "pathological"]),
        ({"dataset": "imagenet"}, ["dataset", "fashion-mnist", "cifar10"]),
        ({"method": "magic"}, ["method", "fedavg"]),
        ({"data_fraction": 0}, ["data_fraction", "out of range"]),
    ],
)
def test_bad_values_are_refused_with_key_value_and_what_is_allowed(
    values: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_dict(values)
    for word in words:
        assert word in str(err.value)


def test_int_is_accepted_for_a_float_key() -> None:
    cfg = Config.from_dict({"lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_overrides_apply_in_order_over_the_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('dataset = "digits"\nrounds = 7\nalpha = 0.1\n')
    cfg = Config.load(path, ["rounds=3", "fraction=0.5", "model=mlp", "rounds=4"])
    assert (cfg.dataset, cfg.rounds, cfg.fraction, cfg.model, cfg.alpha) == (
        "digits",
        4,
        0.5,
        "mlp",
        0.1,
    )


def test_a_fedrlprune_table_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[fedrlprune]\nclients = 3\n")
    assert Config.load(path).clients == 3


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("rounds=abc", ["rounds", "int"]),
        ("rounds", ["key=value"]),
        ("=3", ["key=value"]),
        ("colour=blue", ["colour", "unknown"]),
        ("fraction=2", ["fraction", "out of range"]),
    ],
)
def test_bad_overrides_are_refused(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Config.load(None, [override])
    for word in words:
        assert word in str(err.value)


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(bad)


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = Config.from_dict({"dataset": "digits", "alpha": 0.3, "data_path": "/x"})
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    assert Config.load(path) == cfg


def test_every_key_is_described() -> None:
    rows = describe_keys()
    assert [r[0] for r in rows] == list(Config().to_dict())
    assert all(r[3] for r in rows)


def test_shipped_configs_are_valid() -> None:
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
    assert configs, "configs/ should hold example configs"
    for path in configs:
        Config.load(path)


def test_fault_keys_default_to_waiting_for_everyone() -> None:
    cfg = Config()
    assert cfg.round_timeout == 0.0 and cfg.min_clients == 1
    assert Config.from_dict({"round_timeout": 30, "min_clients": 3}).round_timeout == 30.0


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"round_timeout": -1.0}, ["round_timeout", "out of range"]),
        ({"min_clients": 0}, ["min_clients", "out of range"]),
        ({"clients": 4, "min_clients": 5}, ["min_clients", "5", "4 clients selected"]),
        ({"clients": 10, "fraction": 0.2, "min_clients": 3}, ["min_clients", "raise fraction"]),
    ],
)
def test_fault_keys_refuse_impossible_values(values: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_dict(values)
    for word in words:
        assert word in str(err.value)


def test_the_renamed_rl_federated_key_says_what_to_write() -> None:
    with pytest.raises(ConfigError, match="rl_policy"):
        Config.from_dict({"rl_federated": False})
    assert Config.load(None, ["rl_policy=central"]).rl_policy == "central"


def test_auto_aggregation_is_each_methods_own_rule_and_an_explicit_rule_wins() -> None:
    def rule(**kw: object) -> str:
        return Config.from_dict(kw).aggregation_rule()

    assert rule(method="fedrlprune") == "vote" and rule(method="feddst") == "vote"
    assert rule(method="lotteryfl") == "lotteryfl" and rule(method="fedmp") == "residual"
    assert rule(method="fedrlprune", aggregation="naive") == "naive"  # the ablation
    assert Config.from_dict({"method": "fedmp"}).structured  # FedMP cuts whole neurons


def test_single_weight_baselines_refuse_structured_pruning_and_say_what_to_set() -> None:
    with pytest.raises(ConfigError, match='prune_mode = "unstructured"'):
        Config.from_dict({"method": "feddst", "prune_mode": "structured"})


def test_synthetic_and_the_natural_split_go_together_and_say_what_to_set() -> None:
    cfg = Config.from_dict({"dataset": "synthetic", "partition": "natural"})
    assert (cfg.synthetic_alpha, cfg.synthetic_beta) == (1.0, 1.0)
    with pytest.raises(ConfigError, match='set partition = "natural"'):
        Config.from_dict({"dataset": "synthetic"})  # the default partition is dirichlet
    with pytest.raises(ConfigError, match="set partition to iid, dirichlet or pathological"):
        Config.from_dict({"dataset": "digits", "partition": "natural"})
