"""Local training and evaluation: plain PyTorch loops over in-memory arrays.

Clients hold their split as tensors already, so mini-batches are taken by slicing a shuffled
index rather than through a DataLoader (which costs more than the step itself for small models).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call


class StepHook(Protocol):
    """Called around every optimiser step, e.g. to keep pruned weights at zero."""

    def before_step(self) -> None: ...
    def after_step(self) -> None: ...


LR_SCHEDULES = ("constant", "cosine")


def round_lr(lr: float, schedule: str, rnd: int, rounds: int) -> float:
    """The local learning rate of round `rnd` (1-based) of `rounds`. `cosine` anneals over the
    rounds (Loshchilov & Hutter, SGDR, 2017), so the last rounds average small, quiet steps
    instead of the noise a large constant step leaves in the global model."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (rnd - 1) / rounds))
    raise ValueError(f"unknown lr_schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean training loss over the last epoch
    samples: int  # samples seen over all epochs
    seconds: float


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    hook: StepHook | None = None,
    core: dict[str, np.ndarray] | None = None,
    max_grad_norm: float = 0.0,
    micro_batch: int = 0,
) -> TrainResult:
    """Run `epochs` of mini-batch SGD on (x, y); the shuffling order comes from `seed`.

    `max_grad_norm` > 0 clips the gradient's norm before each step (as HeteroFL's and
    FedRolex's official code do, at 1): a freshly pruned model's first steps can be large
    enough to diverge at learning rates the dense model trains well with.

    `core` (parameter name -> bool mask, 1 = kept): a sub-network of the model that is trained
    as a model of its own in the same step, its loss added to the full model's (the sandwich
    rule of slimmable networks, Yu & Huang, ICCV 2019). Its gradient reaches only the weights
    it keeps, since they enter its forward pass multiplied by the mask.

    `micro_batch` > 0 runs each mini-batch as micro-batches of that many samples whose
    gradients add up to the mini-batch's (`training_plan`: what a device with little RAM does).
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    params = dict(model.named_parameters())
    kept = {
        name: torch.from_numpy(np.asarray(m, dtype=np.float32)) for name, m in (core or {}).items()
    }
    model.train()
    n, seen, last_epoch_loss = len(x), 0, float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = 0.0
            for part in idx.split(micro_batch or len(idx)):
                share = len(part) / len(idx)
                loss += _backward(model, loss_fn, x[part], y[part], params, kept, share)
            if hook is not None:
                hook.before_step()
            if max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            if hook is not None:
                hook.after_step()
            total += loss * len(idx)
        seen += n
        last_epoch_loss = total / max(n, 1)
    return TrainResult(last_epoch_loss, seen, time.perf_counter() - start)


def _backward(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    params: dict[str, nn.Parameter],
    kept: dict[str, torch.Tensor],
    share: float,
) -> float:
    """Backward pass of one (micro-)batch, its gradient scaled by its `share` of the
    mini-batch so that micro-batches add up to the mini-batch's gradient; returns the scaled
    loss."""
    loss = loss_fn(model(x), y)
    total = loss
    if kept:
        sub = {name: params[name] * m for name, m in kept.items()}
        total = loss + loss_fn(functional_call(model, sub, (x,)), y)
    (total * share).backward()
    return float(loss.item()) * share


def batchnorm_statistics(model: nn.Module) -> list[str]:
    """State keys of the model's BatchNorm running statistics (what `refresh_batchnorm` sets)."""
    return [
        f"{name}.{buf}" if name else buf
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for buf, value in m.named_buffers(recurse=False)
        if value is not None
    ]


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over one pass of
    `x` in train mode; returns the samples seen (0 if the model has no BatchNorm).

    A client trains a few steps a round, and the running averages (momentum 0.1) lag weights
    that move that fast: evaluated in eval mode, a ResNet-18 after one local epoch sits at
    chance while the same weights in train mode are at 0.4. Recomputing the statistics for the
    weights as trained is what slimmable networks' and HeteroFL's static BatchNorm do.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(x) == 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average over the pass
    model.train()
    for lo in range(0, len(x), batch_size):
        model(x[lo : lo + batch_size])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return len(x)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (0..1) of `model` on (x, y); (nan, nan) if empty."""
    if len(x) == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum, correct = 0.0, 0
    for lo in range(0, len(x), batch_size):
        out = model(x[lo : lo + batch_size])
        target = y[lo : lo + batch_size]
        loss_sum += nn.functional.cross_entropy(out, target, reduction="sum").item()
        correct += int((out.argmax(1) == target).sum())
    return loss_sum / len(x), correct / len(x)


def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Arrays to tensors without a copy where possible (read-only arrays are copied once)."""
    xs = np.ascontiguousarray(x, dtype=np.float32)
    if not xs.flags.writeable:
        xs = xs.copy()
    return torch.from_numpy(xs), torch.from_numpy(np.asarray(y, dtype=np.int64).copy())


def get_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy copies (what goes on the wire and into aggregation)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
