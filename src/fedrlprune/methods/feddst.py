"""FedDST: dynamic sparse training, prune and regrow at constant sparsity.

Paper: S. Bibikar, H. Vikalo, Z. Wang, X. Chen, "Federated Dynamic Sparse Training: Computing
Less, Communicating Less, Yet Learning Better", AAAI 2022 (code: github.com/bibikar/feddst,
`dst.py`, `models.py`). We run it as that code runs it.

What it does. The model is sparse from the first round: the server prunes the initial model by
magnitude to `prune_rate` overall, spread over the layers by `feddst_distribution` (`erk`, the
official default, as `models.py` `_weights_by_layer` computes it: a layer's sparsity in
proportion to 1 - (n_in + n_out + sum(kernel)) / (n_in n_out prod(kernel)); or `uniform`).
Each round clients take the global model under the global mask and train it with the mask
enforced. In a readjustment round (`readjust_rounds`: every `feddst_every` rounds from the
second round on, until half the run, as `dst.py` does) each client then moves its mask after
its local epochs (`prune_and_regrow`): it drops the `feddst_ratio` share of its kept weights
with the smallest |w| and regrows as many pruned weights with the largest |gradient|, at zero,
so its sparsity stays what it was. The ratio is constant: `dst.py` computes a cosine-annealed
ratio (the paper's alpha_t) but `Client.train` prunes with `args.readjustment_ratio`, so the
annealing only ends the readjustments at `--rate-decay-end` (half the run). The server merges
with the mask-vote weighted average (`vote` rule: a weight counts where a client keeps it),
keeps every weight some client voted for (`--min-votes 0`), re-prunes each layer by magnitude
back to its sparsity, and zeroes what the new mask drops.

Where we depart from the official code, and why:
- Short runs: with `rounds // 2 - 2 < feddst_every` the interval shrinks to `rounds // 2 - 2`
  (at least 1), so a run of 20-40 rounds still readjusts twice; the official 10 over 400
  rounds gives 20 readjustments, which our runs cannot hold at that interval.
- Regrowth picks only among pruned weights (as the paper and RigL say); the official
  `layer_grow` takes the top |gradient| over every entry, kept ones included, which zeroes
  kept weights and regrows fewer than it dropped.
- The gradient for regrowth is that of the client's whole training split (the official code
  uses its last mini-batch); the layers are our pruned layers (the head stays dense, by
  `prune_skip`), and ERK counts weights only (the official code counts biases too); a layer
  ERK would prune entirely keeps one weight (the official code leaves it dense).
- Weight decay, momentum, local epochs and batch size come from the run's config, the same for
  every method (the official defaults: 0.001, 0.9, 10 epochs, batch 32).

Device budgets: FedDST has one sparsity for everyone and no notion of per-client capacity; we do
not force budgets on it, and `budget_satisfaction` reports how many deployed models fit.
"""

from __future__ import annotations

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


def readjust_rounds(rounds: int, every: int) -> list[int]:
    """Our (1-based) rounds in which clients move their masks: `dst.py` readjusts in its
    0-based rounds r with (r - 1) % every == 0 while r < rounds // 2 (its `--rate-decay-end`
    default, where the annealed ratio reaches 0). `every` shrinks so that a short run still
    gets two readjustments where half of it allows."""
    end = rounds // 2
    step = max(1, min(every, end - 2))
    return [r + 1 for r in range(1, end, step)]


def erk_rates(shapes: dict[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    """Per-layer sparsity with `sparsity` overall, as the official `_weights_by_layer` spreads
    it: each layer's in proportion to 1 - (n_in + n_out + sum(kernel)) / (n_in n_out
    prod(kernel)), so large layers are pruned most. A layer is kept at one weight at least."""
    raw, size = {}, {}
    for layer, shape in shapes.items():
        n_out, n_in, kernel = shape[0], shape[1] if len(shape) > 1 else 1, shape[2:]
        fan = n_in + n_out + (sum(kernel) if kernel else 0)
        raw[layer] = 1.0 - fan / (n_in * n_out * int(np.prod(kernel, dtype=np.int64)))
        size[layer] = int(np.prod(shape, dtype=np.int64))
    weighted = sum(raw[k] * size[k] for k in shapes)
    scale = sparsity * sum(size.values()) / weighted if weighted > 0 else 0.0
    return {k: float(min(max(raw[k] * scale, 0.0), 1.0 - 1.0 / size[k])) for k in shapes}


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

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        self.readjust_in = set(readjust_rounds(self.cfg.rounds, self.cfg.feddst_every))
        shapes = {t: tuple(np.shape(state[f"{t}.weight"])) for t in self.targets}
        if self.cfg.feddst_distribution == "erk":
            self.rates = erk_rates(shapes, self.cfg.prune_rate)
        else:
            self.rates = dict.fromkeys(self.targets, self.cfg.prune_rate)
        self.rates = {t: max(r, self.cfg.server_sparsity) for t, r in self.rates.items()}
        if global_masks:  # a resumed run: sparse already
            return state, global_masks
        masks = magnitude_masks(state, self.rates)
        return apply_masks(state, masks), masks

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return global_masks

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        return global_masks

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        ratio = self.cfg.feddst_ratio if rnd in self.readjust_in else 0.0
        return Orders(round=rnd, masks=masks, core=core, readjust=ratio)

    def merge_options(self) -> dict[str, Any]:
        return {"vote_threshold": ANY_VOTE, "target_sparsity": None}

    def merge(self, rnd: int, state: State, replies: dict[int, Any]) -> tuple[State, Masks]:
        """The vote-weighted merge over the union of the clients' masks, then each layer
        re-pruned by magnitude back to its sparsity (`dst.py`, after aggregation)."""
        state, union = super().merge(rnd, state, replies)
        global_masks = magnitude_masks(state, self.rates, "unstructured", union)
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
