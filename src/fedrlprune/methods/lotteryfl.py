"""LotteryFL: personal lottery tickets found by iterative magnitude pruning with reset.

Paper: A. Li, J. Sun, B. Wang, L. Duan, S. Li, Y. Chen, H. Li, "LotteryFL: Personalized and
Communication-Efficient Federated Learning with Lottery Ticket Hypothesis on Non-IID Datasets",
arXiv:2008.03371, 2020 (code: github.com/charleslipku/LotteryFL, `src/lotteryFL.py`,
`src/options.py`, `src/utils.py`). We run it as that code runs it.

What it does. Each client keeps its own mask (its lottery ticket). Every round it receives the
global model under that mask and measures it. When the accuracy exceeds `lottery_threshold`
(0.2, the official `--prune_start_acc` of every run in the authors' README) and its sparsity is
still below `prune_rate` (`should_prune`), it prunes `PRUNE_STEP` of the weights each layer
still keeps by magnitude (`next_rate`; `prune_by_percentile` with `--prune_percent 20`) and
resets every parameter to the run's initial weights under the new mask (`reset_to_init`,
`mask_model` with `init_weights`): the lottery ticket hypothesis's rewind (Frankle & Carbin
2019). The initial weights are rebuilt on the client from the run's seed. Then it trains its
ticket. The server averages each weight over the clients that keep it, unweighted (the
`lotteryfl` aggregation rule, `average_weights_with_masks`), a weight no client keeps keeps its
previous value (`mix_global_weights`), and each client deploys the global model under its own
mask.

Where we depart from the official code, and why:
- The accuracy is measured on the client's validation split (the official code uses the first
  batches of its local test data), so that the client's test split stays unseen for the
  figures we report.
- The target is the run's `prune_rate`, the same for every method (the official default
  `--prune_end_rate 0.5` keeps half the weights; the authors' runs keep 50% on CIFAR-10 and 10%
  on MNIST and EMNIST). The official code prunes a whole step while it is still denser than the
  target, so it ends up to one step sparser (59% for a 50% target); we stop at the target, so
  every method is compared at the same sparsity.
- Local epochs, batch size, learning rate and momentum come from the run's config, the same for
  every method (the official runs: 60 local epochs over about 40 samples per client, batch 32,
  lr 0.01, momentum 0.5); our clients hold far more samples, and one training budget for every
  method keeps the comparison fair.
- The pruned layers are the run's (the head stays dense, by `prune_skip`); the official code
  prunes every weight tensor, the classifier's included.

Device budgets: LotteryFL has one target sparsity and no notion of per-client capacity; we do
not force budgets on it, and `budget_satisfaction` reports how many deployed models fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import ANY_VOTE, ClientData, Finished, Method, Pruned, rate_metrics
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook, evaluate, set_state

if TYPE_CHECKING:
    from fedrlprune.config import Config

# Share of each layer's kept weights one pruning step removes: the `--prune_percent 20` of the
# authors' MNIST, CIFAR-10 and EMNIST runs in the official README (argparse default: 10).
PRUNE_STEP = 0.2


def should_prune(val_accuracy: float, threshold: float, sparsity: float, target: float) -> bool:
    """Prune this round when the ticket is good enough (strictly above the threshold, as
    `lotteryFL.py` tests `acc_beforeTrain > args.prune_start_acc`) and not yet as sparse as the
    target."""
    return val_accuracy > threshold and sparsity < target - 1e-9


def next_rate(sparsity: float, target: float, step: float = PRUNE_STEP) -> float:
    """The sparsity after one step: `step` of what is left goes, never past `target`. Rounded
    to 12 digits, so 1 - 0.8 is 0.2 and floor(0.2 x 40) prunes 8 weights, not 7."""
    return min(target, round(1.0 - (1.0 - sparsity) * (1.0 - step), 12))


def reset_to_init(initial: State, masks: Masks) -> State:
    """The run's initial weights under the new mask: every parameter rewound, pruned ones 0."""
    return apply_masks({k: np.array(v, copy=True) for k, v in initial.items()}, masks)


def sparsity_of(masks: Masks, layers: list[str]) -> float:
    """Pruned share of the pruned layers' weights together (0 with no mask yet)."""
    held = [masks[f"{layer}.weight"] for layer in layers if f"{layer}.weight" in masks]
    total = sum(m.size for m in held)
    if not held or total == 0:
        return 0.0
    return 1.0 - sum(int(m.sum()) for m in held) / total


class LotteryFL(Method):
    """Personal masks; the global model keeps every weight some client keeps."""

    name = "lotteryfl"
    summary = "LotteryFL: personal lottery tickets, mask-count averaging"
    aggregation = "lotteryfl"
    modes = ("unstructured",)
    resumable = False  # resuming it is not tested yet

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        return Orders(round=rnd, masks=masks, core=core, learn=True)

    def merge_options(self) -> dict[str, Any]:
        return {"vote_threshold": ANY_VOTE, "target_sparsity": self.cfg.server_sparsity or None}

    @classmethod
    def prune(
        cls, cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
    ) -> Pruned:
        """Prune `PRUNE_STEP` further and rewind once the ticket is good enough."""
        if not orders.learn:
            return Pruned(state, masks)
        set_state(data.model, state)
        _, acc = evaluate(data.model, data.x_val, data.y_val)
        sparsity = sparsity_of(masks, data.targets)
        metrics: dict[str, Any] = {"val-accuracy-before": acc, "pruned-now": 0}
        if not should_prune(acc, cfg.lottery_threshold, sparsity, cfg.prune_rate):
            return Pruned(state, masks, metrics)
        rate = next_rate(sparsity, cfg.prune_rate)
        masks = magnitude_masks(state, dict.fromkeys(data.targets, rate), "unstructured", masks)
        initial = reset_to_init(data.initial_state(cfg.seed), masks)
        return Pruned(initial, masks, metrics | {"pruned-now": 1})

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        return Finished(masks, rate_metrics(masks))
