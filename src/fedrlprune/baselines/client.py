"""What a client does for each baseline around its local training; nothing here knows Flower.

`prune` runs before training, `training_hook` sees every optimiser step and `after_training`
finishes the round; each baseline acts in the hooks it needs (its module says what it does
there), and the ClientApp calls them the same way for every baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedrlprune.baselines import feddst, lotteryfl
from fedrlprune.config import Config
from fedrlprune.fl.training import evaluate, get_state, set_state
from fedrlprune.pruning.masks import MaskEnforcer, apply_masks, layer_sparsity, magnitude_masks
from fedrlprune.state import Masks, State


@dataclass
class ClientData:
    """The client's own splits and model, as the ClientApp holds them."""

    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    targets: list[str]
    initial: State | None = None  # the run's initial weights (LotteryFL's rewind)


def prune(
    cfg: Config, data: ClientData, state: State, masks: Masks, extra: dict[str, Any]
) -> tuple[State, Masks, dict[str, Any]]:
    """The baseline's step before training: (state, masks, metrics)."""
    if cfg.method != "lotteryfl" or not extra.get("learn"):
        return state, masks, {}
    set_state(data.model, state)
    _, acc = evaluate(data.model, data.x_val, data.y_val)
    sparsity = lotteryfl.sparsity_of(masks, data.targets)
    metrics: dict[str, Any] = {"val-accuracy-before": acc, "pruned-now": 0}
    if not lotteryfl.should_prune(acc, cfg.lottery_threshold, sparsity, cfg.prune_rate):
        return state, masks, metrics
    if data.initial is None:
        raise ValueError("lotteryfl needs the run's initial weights to rewind to")
    rate = lotteryfl.next_rate(sparsity, cfg.prune_rate)
    masks = magnitude_masks(state, dict.fromkeys(data.targets, rate), "unstructured", masks)
    metrics["pruned-now"] = 1
    return lotteryfl.reset_to_init(data.initial, masks), masks, metrics


@dataclass
class ImportanceHook:
    """PruneFL: sums every weight's squared gradient over the local steps, pruned weights
    included (read before the mask zeroes their gradient), then enforces the mask."""

    model: nn.Module
    masks: Masks
    names: list[str]
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    rest: float = 0.0  # squared gradients of every other parameter, summed

    def __post_init__(self) -> None:
        self.enforcer = MaskEnforcer(self.model, self.masks) if self.masks else None
        self.params = dict(self.model.named_parameters())
        self.sums = {n: torch.zeros_like(self.params[n]) for n in self.names}

    def before_step(self) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                if param.grad is None:
                    continue
                if name in self.sums:
                    self.sums[name] += param.grad.square()
                else:
                    self.rest += float(param.grad.square().sum())
        if self.enforcer is not None:
            self.enforcer.before_step()

    def after_step(self) -> None:
        if self.enforcer is not None:
            self.enforcer.after_step()


def training_hook(
    cfg: Config, model: nn.Module, masks: Masks, targets: list[str], extra: dict[str, Any]
) -> ImportanceHook | MaskEnforcer | None:
    """The step hook for local training: the mask, and PruneFL's importance when asked."""
    if cfg.method == "prunefl" and extra.get("importance"):
        return ImportanceHook(model, masks, [f"{t}.weight" for t in targets])
    return MaskEnforcer(model, masks) if masks else None


def before_training(cfg: Config, data: ClientData, extra: dict[str, Any]) -> dict[str, Any]:
    """FedMP: the training loss of the sub-model as received, for the bandit's reward."""
    if cfg.method == "fedmp" and extra.get("loss_delta"):
        return {"loss-before": evaluate(data.model, data.x_train, data.y_train)[0]}
    return {}


def after_training(
    cfg: Config,
    data: ClientData,
    masks: Masks,
    hook: ImportanceHook | MaskEnforcer | None,
    extra: dict[str, Any],
) -> tuple[Masks, dict[str, Any], State | None]:
    """Finish the round: (masks to send, metrics, squared gradients for PruneFL or None)."""
    metrics: dict[str, Any] = {}
    importance = None
    if cfg.method == "fedmp" and extra.get("loss_delta"):
        metrics["loss-after"] = evaluate(data.model, data.x_train, data.y_train)[0]
    if isinstance(hook, ImportanceHook):
        importance = {n: t.detach().cpu().numpy().copy() for n, t in hook.sums.items()}
        metrics["importance-rest"] = hook.rest
    ratio = float(extra.get("readjust", 0.0))
    if cfg.method == "feddst" and ratio > 0.0 and masks:
        names = [f"{t}.weight" for t in data.targets]
        grads = feddst.local_gradients(data.model, data.x_train, data.y_train, names)
        state = get_state(data.model)
        moved = dict(masks)
        for name in names:
            moved[name] = feddst.prune_and_regrow(state[name], masks[name], grads[name], ratio)
        set_state(data.model, apply_masks(state, moved))  # regrown at zero, dropped zeroed
        metrics["mask-moved"] = int(sum(int((moved[n] & ~masks[n]).sum()) for n in names))
        masks = moved
    metrics |= {f"rate/{layer}": rate for layer, rate in layer_sparsity(masks).items()}
    return masks, metrics, importance


def initial_state(model_fn: Any, input_shape: tuple[int, ...], classes: int, seed: int) -> State:
    """The run's initial weights, rebuilt the way the server builds them (same seed, same
    factory), so they never travel: LotteryFL's rewind point."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_state(model_fn(input_shape, classes))
