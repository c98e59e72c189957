"""FedDST: dynamic sparse training, prune and regrow at constant sparsity.

Paper: S. Bibikar, H. Vikalo, Z. Wang, X. Chen, "Federated Dynamic Sparse Training: Computing
Less, Communicating Less, Yet Learning Better", AAAI 2022 (code: github.com/bibikar/feddst,
`dst.py`).

What it does. The model is sparse from the first round: the server prunes the initial model by
magnitude to `prune_rate` in every pruned layer. Each round clients take the global model under
the global mask and train it with the mask enforced. In a readjustment round each client then
moves its mask (`prune_and_regrow`): it drops the `ratio` share of its kept weights with the
smallest |w| and regrows as many pruned weights with the largest |gradient| (the gradient of its
local loss at its trained weights, pruned entries included), at zero, so its sparsity stays
what it was. The ratio anneals with a cosine from `READJUST_RATIO` to zero at half the run
(`readjust_ratio`). The server merges with the mask-vote weighted average (`vote` rule: a weight
counts where a client keeps it), keeps every weight some client voted for, re-prunes each layer
by magnitude back to `prune_rate` (`server_sparsity` in the aggregation), and zeroes what the
new mask drops.

Where we depart from the paper, and why:
- Layer sparsity is uniform (`prune_rate` in every pruned layer); the paper's default is ERK.
- Readjustment rounds are the pruning rounds of the schedule (`prune_start`, `prune_until`,
  `prune_every`), the paper's "every R rounds" with R = `prune_every`; a client moves its mask
  after its local epochs rather than at a set epoch inside them, and its gradient is that of
  its whole training split (the paper uses the last mini-batch).
- Weight decay and momentum come from the run's config (the paper uses 0.001 and 0.9).

Device budgets: FedDST has one sparsity for everyone and no notion of per-client capacity; we do
not force budgets on it, and `budget_satisfaction` reports how many deployed models fit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import ANY_VOTE, ClientData, Finished, Method, rate_metrics
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook, get_state, set_state

if TYPE_CHECKING:
    from fedrlprune.config import Config

READJUST_RATIO = 0.5  # the paper's default share of kept weights moved per readjustment


def readjust_ratio(rnd: int, end: int, start: float = READJUST_RATIO) -> float:
    """The share of kept weights moved in round `rnd`: cosine annealing from `start` at round 0
    to 0 at round `end` (the paper's `rate_decay_end`, half the run), 0 after."""
    if end <= 0 or rnd >= end:
        return 0.0
    return start / 2.0 * (1.0 + math.cos(math.pi * rnd / end))


def prune_and_regrow(
    weight: np.ndarray, mask: np.ndarray, grad: np.ndarray, ratio: float
) -> np.ndarray:
    """Drop the `ratio` share of kept entries with the smallest |weight|, then regrow as many
    entries that are pruned now (just dropped ones included, as in RigL) with the largest
    |grad|. The kept count is unchanged. Ties go to the lower flat index."""
    keep = np.asarray(mask, dtype=bool).ravel().copy()
    alive = np.flatnonzero(keep)
    n_move = int(ratio * alive.size)
    if n_move == 0:
        return keep.reshape(mask.shape)
    drop = alive[np.argsort(np.abs(weight.ravel()[alive]), kind="stable")[:n_move]]
    keep[drop] = False
    dead = np.flatnonzero(~keep)
    grow = dead[np.argsort(-np.abs(grad.ravel()[dead]), kind="stable")[:n_move]]
    keep[grow] = True
    return keep.reshape(mask.shape)


def local_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], batch: int = 1024
) -> dict[str, np.ndarray]:
    """The gradient of the mean local loss with respect to the named parameters, every entry
    included (a pruned weight at zero still has a gradient: what regrowing it would give)."""
    params = dict(model.named_parameters())
    model.train()
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for lo in range(0, len(x), batch):
        (loss_fn(model(x[lo : lo + batch]), y[lo : lo + batch]) / max(len(x), 1)).backward()
    out = {}
    for name in names:
        grad = params[name].grad
        out[name] = (
            np.zeros(tuple(params[name].shape), np.float32)
            if grad is None
            else grad.detach().cpu().numpy().copy()
        )
    model.zero_grad(set_to_none=True)
    return out


class FedDST(Method):
    """Sparse from the start; clients prune and regrow; the server re-prunes to the target."""

    name = "feddst"
    summary = "FedDST: prune and regrow at constant sparsity"
    modes = ("unstructured",)
    resumable = False  # resuming it is not tested yet
    keeps_own_masks = False
    may_move = True

    def start(self, state: State, train_sizes: dict[int, int]) -> tuple[State, Masks]:
        masks = magnitude_masks(state, dict.fromkeys(self.targets, self.cfg.prune_rate))
        # The cosine anneals to zero just after the last readjustment round.
        self.end = max(self.fleet.prune_rounds) + 1
        return apply_masks(state, masks), masks

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return global_masks

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        return global_masks

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        ratio = readjust_ratio(rnd, self.end) if rnd in self.fleet.prune_rounds else 0.0
        return Orders(round=rnd, masks=masks, core=core, readjust=ratio)

    def merge_options(self) -> dict[str, Any]:
        target = max(self.cfg.prune_rate, self.cfg.server_sparsity)
        return {"vote_threshold": ANY_VOTE, "target_sparsity": target}

    def merge(self, rnd: int, state: State, replies: dict[int, Any]) -> tuple[State, Masks]:
        state, global_masks = super().merge(rnd, state, replies)
        return apply_masks(state, global_masks), global_masks

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        """Move the mask: prune the weakest kept weights, regrow the strongest gradients."""
        if orders.readjust <= 0.0 or not masks:
            return Finished(masks, rate_metrics(masks))
        names = [f"{t}.weight" for t in data.targets]
        grads = local_gradients(data.model, data.x_train, data.y_train, names)
        state = get_state(data.model)
        moved = dict(masks)
        for name in names:
            moved[name] = prune_and_regrow(state[name], masks[name], grads[name], orders.readjust)
        set_state(data.model, apply_masks(state, moved))  # regrown at zero, dropped zeroed
        metrics = {"mask-moved": int(sum(int((moved[n] & ~masks[n]).sum()) for n in names))}
        return Finished(moved, metrics | rate_metrics(moved))
