"""Device tiers: ordered sensibly, assigned deterministically, costed by hand."""

import pytest

from fedrlprune.devices import (
    TIERS,
    Budget,
    DeviceProfile,
    assign_tiers,
    budget,
    over_budget,
    simulated_round,
    training_flops,
    within_budget,
)
from fedrlprune.errors import ConfigError

ORDER = ["mcu", "sbc", "phone", "laptop"]  # weakest first


@pytest.mark.parametrize(
    "field", ["flops_per_second", "memory_bytes", "flops_budget", "params_budget"]
)
def test_tiers_are_strictly_ordered(field: str) -> None:
    values = [getattr(TIERS[name], field) for name in ORDER]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_tier_figures_are_sane() -> None:
    assert set(ORDER) <= set(TIERS)
    for name, tier in TIERS.items():
        assert tier.name == name
        assert 0 < tier.params_budget <= tier.flops_budget <= 1
        assert min(tier.up_bps, tier.down_bps, tier.joules_per_flop, tier.memory_bytes) > 0


def test_mixed_covers_every_tier_evenly_and_follows_the_seed() -> None:
    tiers = assign_tiers(8, "mixed", seed=0)
    assert len(tiers) == 8 and all(tiers.count(name) == 2 for name in TIERS)
    assert assign_tiers(8, "mixed", seed=0) == tiers
    assert len({tuple(assign_tiers(8, "mixed", seed=s)) for s in range(10)}) > 1
    # 6 clients over 4 tiers: counts 2, 2, 1, 1, and every tier present
    counts = sorted(assign_tiers(6, "mixed", seed=3).count(name) for name in TIERS)
    assert counts == [1, 1, 2, 2]


def test_single_tier_and_comma_list() -> None:
    assert assign_tiers(3, "phone", seed=0) == ["phone"] * 3
    assert assign_tiers(5, "mcu, phone,phone", seed=0) == ["mcu", "phone", "phone", "mcu", "phone"]


def test_unknown_tier_is_a_config_error_listing_the_tiers() -> None:
    with pytest.raises(ConfigError) as err:
        assign_tiers(4, "mcu,toaster", seed=0)
    message = str(err.value)
    assert "toaster" in message and "mixed" in message
    assert all(name in message for name in TIERS)
    with pytest.raises(ConfigError, match="clients"):
        assign_tiers(0, "mixed", seed=0)


def test_budget_arithmetic() -> None:
    tier = DeviceProfile("t", 1e9, 1024, 8e6, 16e6, 1e-9, flops_budget=0.25, params_budget=0.1)
    b = budget(tier, dense_flops=1_000_000, dense_params=50_000)
    # 0.25 * 1e6 ; 0.1 * 5e4 ; the tier's memory as it stands (absolute, not a share)
    assert b == Budget(max_flops=250_000.0, max_params=5_000.0, max_memory=1024.0)
    assert within_budget(b, 250_000, 5_000, 1024)  # the limits themselves fit
    assert not within_budget(b, 250_001, 5_000)
    assert not within_budget(b, 100, 5_001)
    assert not within_budget(b, 100, 100, memory=1025)
    assert over_budget(b, 250_001, 5_001, 1025) == ["flops", "params", "memory"]
    assert over_budget(b, 1, 1, 1) == []


def test_the_mcu_memory_holds_the_fedavg_cnn_at_its_params_share() -> None:
    # The FedAvg CNN: 1,663,370 params (6.65 MB fp32), 200,704 bytes of peak activations.
    mcu = budget(TIERS["mcu"], dense_flops=24_546_304, dense_params=1_663_370)
    weights = mcu.max_params * 4
    assert mcu.max_memory == 512 * 1024
    assert within_budget(mcu, 0, mcu.max_params, weights + 200_704)  # memory does not bind
    assert not within_budget(mcu, 0, 1_663_370, 6_653_480 + 200_704)  # the dense one: 13x


def test_simulated_round_by_hand() -> None:
    tier = DeviceProfile("t", 2e9, 1024, 8e6, 16e6, 1e-9, flops_budget=1.0, params_budget=1.0)
    seconds, joules = simulated_round(tier, 4e9, upload_bytes=1_000_000, download_bytes=2_000_000)
    # 4e9 / 2e9 = 2 s compute ; 8e6 bits / 8e6 = 1 s up ; 16e6 bits / 16e6 = 1 s down
    assert seconds == pytest.approx(4.0)
    assert joules == pytest.approx(4.0)  # 4e9 FLOPs * 1e-9 J, compute only


def test_training_flops_is_three_forward_passes() -> None:
    assert training_flops(1_000.0, samples=50) == 150_000.0  # 3 * 1000 * 50
