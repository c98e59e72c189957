"""How a device trains within its memory: the configured SGD step, split or simplified to fit.

One rule for every method, so a race between methods stays fair: a client trains with the
configured mini-batch and momentum when one step's weights, gradients, momentum and activations
(`pruning.memory.training_memory`, on the model it trains) fit its RAM. If not, it first splits
each mini-batch into micro-batches and accumulates their gradients (the same SGD step, except
that BatchNorm normalises over each micro-batch), halving their size down to one sample; if even
that does not fit, it drops momentum (momentum-free SGD, as on-device training does: Lin et al.,
"On-Device Training Under 256KB Memory", NeurIPS 2022) and halves again from the full batch.
A client that trains a core beside its model (`train_core`) keeps it only where a plan with it
fits. When nothing fits (dense FedAvg on a microcontroller), the client trains as configured
and the server reports the round over the device's limits: the reference keeps its recipe.
Plans are measured once per architecture and kept (`_KNOWN`): a round re-uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fedrlprune.devices import Budget
from fedrlprune.pruning.memory import TrainingMemory, training_memory


@dataclass(frozen=True)
class TrainingPlan:
    """How a client runs its SGD steps, and what one step holds."""

    micro_batch: int  # samples per forward/backward pass (the mini-batch when equal)
    momentum: float
    memory: TrainingMemory
    fits: bool
    core: bool = False  # the core is trained beside the model


def halvings(batch: int) -> list[int]:
    """`batch`, then halved (rounding up) down to 1: the micro-batch sizes a plan tries."""
    sizes = [batch]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def plan_training(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    momentum: float,
    memory_limit: float,
    core: bool = False,
) -> TrainingPlan:
    """The first plan, in the order of the module's rule, whose step fits `memory_limit` bytes
    (the configured one when the limit is infinite); `core`: the step trains a core beside."""
    tries = [(b, momentum) for b in halvings(batch_size)]
    if momentum > 0:
        tries += [(b, 0.0) for b in halvings(batch_size)]
    plan: TrainingPlan | None = None
    for micro, mom in tries:
        try:
            memory = training_memory(model, input_shape, micro, mom > 0, core)
        except ValueError:  # BatchNorm over one value per channel: the size cannot train
            continue
        plan = TrainingPlan(micro, mom, memory, memory.total <= memory_limit, core)
        if plan.fits:
            return plan
    if plan is None:
        raise ValueError(f"{type(model).__name__} cannot take a training step at any batch size")
    return plan


_KNOWN: dict[tuple, TrainingPlan] = {}


def fit_training(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    momentum: float,
    memory_limit: float,
    core: bool = False,
) -> TrainingPlan:
    """The module's rule: with the core where a plan with it fits, then without it, then the
    configured step (`fits` False). Client and server both call it, so the server checks what
    the client ran."""
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    key = (type(model).__name__, input_shape, shapes, batch_size, momentum, memory_limit, core)
    if key not in _KNOWN:
        if len(_KNOWN) > 4096:
            _KNOWN.clear()
        _KNOWN[key] = _fit(model, input_shape, batch_size, momentum, memory_limit, core)
    return _KNOWN[key]


def _fit(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    momentum: float,
    memory_limit: float,
    core: bool,
) -> TrainingPlan:
    for with_core in (True, False) if core else (False,):
        plan = plan_training(model, input_shape, batch_size, momentum, memory_limit, with_core)
        if plan.fits:
            return plan
    memory = training_memory(model, input_shape, batch_size, momentum > 0, core)
    return TrainingPlan(batch_size, momentum, memory, False, core)


@dataclass(frozen=True)
class TrainingFootprint:
    """What a client's round asked of its device: the model it trained (its parameters and
    forward FLOPs per sample) and how it trained it (the plan and what one step holds)."""

    params: int
    flops: int
    plan: TrainingPlan

    def ratios(self, limit: Budget) -> dict[str, float]:
        """Each limit's footprint-to-limit ratio (above 1: over that limit)."""
        return {
            "params": self.params / limit.max_params,
            "flops": self.flops / limit.max_flops,
            "memory": self.plan.memory.total / limit.max_memory,
        }

    def ratio(self, limit: Budget) -> float:
        """The worst of the three ratios: at most 1 when the round fitted the device."""
        return max(self.ratios(limit).values())
