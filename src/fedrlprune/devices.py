"""Device profiles: what a client tier can compute, hold, send and spend, for simulated cost.

Figures are round numbers from public sources, cited beside each; most are approximate, and
they are meant to put tiers in the right order and rough scale, not to predict one board.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedrlprune.errors import ConfigError

GIB = 1024**3


@dataclass(frozen=True)
class DeviceProfile:
    """One device tier; the FLOPs and params budgets are shares of the dense model, the rest
    absolute figures. `memory_bytes` is the tier's memory budget as it stands: RAM is a fixed
    wall whatever the model, so unlike compute it is not scaled to the model's size."""

    name: str
    flops_per_second: float  # sustained FP32 throughput usable for DNN inference/training
    memory_bytes: int  # RAM available to the app: the memory budget, weights plus activations
    up_bps: float  # uplink, bits/s
    down_bps: float  # downlink, bits/s
    joules_per_flop: float  # energy per FLOP
    flops_budget: float  # share (0, 1] of the dense model's FLOPs it can afford per sample
    params_budget: float  # share (0, 1] of the dense model's parameters it can hold


# Budget shares: the share of a model sized for a workstation-class reference that the tier can
# run within a fixed latency and memory envelope. Raw speed ratios (0.3 : 5 : 20 : 200 GFLOP/s)
# would ask the MCU for 0.15% of the model, beyond what pruning reaches with usable accuracy, so
# the shares keep the tiers' order but are compressed into the range pruning papers report
# (Han et al., "Deep Compression", ICLR 2016: 9-13x fewer parameters, i.e. 8-11% kept, at no
# accuracy loss). Params are cut harder than FLOPs: memory is a wall (the model must fit) while
# FLOPs only cost time, and fully connected layers hold many parameters but few FLOPs, so they
# prune further at equal accuracy. Even the laptop gets < 1, so every tier prunes.
# Memory is the third limit, absolute: weights plus peak activations at batch 1 must fit the
# tier's `memory_bytes`. Against the FedAvg CNN on 1x28x28 (1,663,370 params: 6.65 MB of
# weights, 0.20 MB of peak activations) the MCU's params share of 0.03 keeps 49,901 params,
# 0.20 MB, so weights plus even the dense model's activations (0.40 MB) fit its 512 KiB: on
# that model the params share, not the RAM, is the MCU's binding limit (the RAM alone would
# allow about 4.9% of the weights). Memory binds where activations are large: VGG-11 on
# 3x32x32 has 0.52 MB of dense activations, more than the MCU's 512 KiB before any weight.
TIERS: dict[str, DeviceProfile] = {
    # STM32H743 (ST STM32H743xI datasheet, 2019): Cortex-M7 at 480 MHz with an FPU (one FMA
    # per cycle, ~1 GFLOP/s peak), 1 MB SRAM. Sustained ~0.3 GFLOP/s in DNN kernels and
    # ~0.3 W in run mode at 480 MHz (approximate, datasheet order of magnitude): ~1 nJ/FLOP.
    # Half the SRAM for the app. Radio: Bluetooth 5 LE 2M PHY, ~1 Mbit/s usable (Bluetooth
    # SIG, "Understanding Bluetooth LE throughput", approximate).
    "mcu": DeviceProfile(
        name="mcu",
        flops_per_second=0.3e9,
        memory_bytes=512 * 1024,
        up_bps=1e6,
        down_bps=1e6,
        joules_per_flop=1e-9,
        flops_budget=0.05,
        params_budget=0.03,
    ),
    # Raspberry Pi 4 Model B, 2 GB (Raspberry Pi product brief, 2019): 4x Cortex-A72 at
    # 1.5 GHz; HPL measures ~10 GFLOP/s, PyTorch sustains ~5 GFLOP/s (approximate); ~6.4 W
    # under full load (Raspberry Pi power measurements, approximate) -> ~1.3 nJ/FLOP.
    # ~1 GiB left to the app after the OS. 802.11ac Wi-Fi on a home link: ~20 Mbit/s up,
    # ~50 Mbit/s down (approximate).
    "sbc": DeviceProfile(
        name="sbc",
        flops_per_second=5e9,
        memory_bytes=1 * GIB,
        up_bps=20e6,
        down_bps=50e6,
        joules_per_flop=1.3e-9,
        flops_budget=0.15,
        params_budget=0.08,
    ),
    # Mid-range smartphone (Cortex-A76/A78-class big cores, e.g. Snapdragon 7-series, 2021):
    # MobileNetV2 (~0.6 GFLOPs) in ~30 ms on CPU FP32 -> ~20 GFLOP/s sustained, ~3 W
    # (approximate, from MLPerf Mobile / AI-Benchmark figures) -> ~0.15 nJ/FLOP. 6 GB RAM,
    # ~2 GiB for a foreground app. 4G/LTE medians ~10 Mbit/s up, ~40 Mbit/s down (Ookla
    # Speedtest Global Index, mobile, 2023, approximate).
    "phone": DeviceProfile(
        name="phone",
        flops_per_second=20e9,
        memory_bytes=2 * GIB,
        up_bps=10e6,
        down_bps=40e6,
        joules_per_flop=1.5e-10,
        flops_budget=0.3,
        params_budget=0.15,
    ),
    # Laptop with a 4-8 core x86 CPU (AVX2 + FMA: 32 FP32 FLOPs/cycle/core, Intel 64 and IA-32
    # Optimization Reference Manual): ~200 GFLOP/s sustained in PyTorch at a ~28 W package
    # (approximate) -> ~0.14 nJ/FLOP. 16 GB RAM, 8 GiB for the app. Fixed broadband medians
    # ~40 Mbit/s up, ~90 Mbit/s down (Ookla Speedtest Global Index, fixed, 2023, approximate).
    "laptop": DeviceProfile(
        name="laptop",
        flops_per_second=200e9,
        memory_bytes=8 * GIB,
        up_bps=40e6,
        down_bps=90e6,
        joules_per_flop=1.4e-10,
        flops_budget=0.6,
        params_budget=0.4,
    ),
}


def assign_tiers(clients: int, mix: str, seed: int) -> list[str]:
    """Tier name per client id, so a run's device heterogeneity is set by config and seed.

    ``mixed``: tiers spread as evenly as possible (counts differ by at most one, every tier
    present once clients >= len(TIERS)), shuffled by `seed`; a tier name: everyone that tier;
    a comma list such as ``mcu,phone,phone``: cycled over the clients in order.
    """
    if clients < 1:
        raise ConfigError(f"clients must be at least 1 to assign device tiers, got {clients}")
    rng = np.random.default_rng(seed)
    if mix == "mixed":
        names = list(TIERS)
        # shuffle the tier order too, so the tiers that get one client more vary with the seed
        order = [names[i] for i in rng.permutation(len(names))]
        spread = [order[i % len(order)] for i in range(clients)]
        return [spread[i] for i in rng.permutation(clients)]
    cycle = [part.strip() for part in mix.split(",")]
    unknown = [part for part in cycle if part not in TIERS]
    if unknown:
        raise ConfigError(
            f"unknown device tier(s) {unknown} in devices mix {mix!r}; use 'mixed', one of "
            f"{', '.join(TIERS)}, or a comma list of them such as 'mcu,phone,phone'"
        )
    return [cycle[i % len(cycle)] for i in range(clients)]


@dataclass(frozen=True)
class Budget:
    """Absolute limits for one client: what its pruned model may cost. `max_memory` (bytes of
    weights plus peak activations at batch 1) is infinite in the budgets pruning counts by,
    which fold the memory limit into `max_params` (`ModelFacts.pruning_budget`)."""

    max_flops: float
    max_params: float
    max_memory: float = math.inf


def budget(profile: DeviceProfile, dense_flops: int, dense_params: int) -> Budget:
    """The tier's shares applied to this model's dense FLOPs and parameter count, and the
    tier's memory as it stands."""
    return Budget(
        profile.flops_budget * dense_flops,
        profile.params_budget * dense_params,
        float(profile.memory_bytes),
    )


def over_budget(b: Budget, flops: float, params: float, memory: float = 0.0) -> list[str]:
    """The limits a model exceeds, by name ("flops", "params", "memory"); [] when it fits."""
    costs = {"flops": (flops, b.max_flops), "params": (params, b.max_params)}
    costs["memory"] = (memory, b.max_memory)
    return [name for name, (cost, limit) in costs.items() if cost > limit]


def within_budget(b: Budget, flops: float, params: float, memory: float = 0.0) -> bool:
    """True when a pruned model's FLOPs, parameters and memory bytes all fit the budget (a
    check that counts no memory, as pruning does against a folded budget, passes 0)."""
    return not over_budget(b, flops, params, memory)


def simulated_round(
    profile: DeviceProfile, train_flops: float, upload_bytes: int, download_bytes: int
) -> tuple[float, float]:
    """(seconds, joules) one round would take on this tier, from FLOPs and bytes alone.

    Time is compute plus upload plus download, done one after the other; energy counts compute
    only (radio energy depends too much on the link to model honestly here).
    """
    seconds = (
        train_flops / profile.flops_per_second
        + upload_bytes * 8 / profile.up_bps
        + download_bytes * 8 / profile.down_bps
    )
    return seconds, train_flops * profile.joules_per_flop


def training_flops(forward_flops_per_sample: float, samples: int) -> float:
    """Training cost as 3x the forward pass (backward ~ 2x forward) per sample seen.

    The usual estimate: Kaplan et al. 2020 ("Scaling Laws for Neural Language Models") count
    6N FLOPs per token for training against 2N for the forward pass.
    """
    return 3.0 * forward_flops_per_sample * samples
