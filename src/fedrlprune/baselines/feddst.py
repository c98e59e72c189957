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

import numpy as np
import torch
from torch import nn

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
