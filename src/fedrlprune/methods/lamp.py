"""`lamp`: `fedrlprune`'s pipeline with LAMP's layer-adaptive rates in place of the policy.

J. Lee, S. Park, S. Mo, S. Ahn, J. Shin, "Layer-adaptive Sparsity for the Magnitude-based
Pruning", ICLR 2021; official code github.com/jaeho-lee/layer-adaptive-sparsity
(`tools/pruners.py`: `_normalize_scores` and `_compute_lamp_amounts`, used by
`prune_weights_lamp`). LAMP gives every kept weight u of a layer the score

    score(u) = w_u^2 / sum of w_v^2 over the weights v of the layer with |w_v| >= |w_u|

(the weights sorted by magnitude, the sum runs from u to the largest; ties go by position, as
a stable sort puts them). Within a layer the score grows with the magnitude, and every layer's
largest weight scores 1, so pruning the globally lowest scores prunes each layer by magnitude
at a rate LAMP chooses, and never empties a layer before every other has one weight left.

Everything but the rates is `fedrlprune`'s (`BudgetedPruning`): the same progressive budget
per pruning step, regrowth from the global mask, the core, held-out clients, the deployment
rule, the merge and the metrics. A client scores its kept weights, prunes the lowest scores
across all target layers until its model fits this step's budget, and the resulting per-layer
rates are its rates (reported in rates.csv as `fedrlprune`'s are); the masks come from the
same `MagnitudeRanking` as `rl_prune`'s. Departures from the paper and its code:

- The target is a budget, not a sparsity. The official code keeps the round((1 - amount) x
  unmasked) highest scores; our tiers limit FLOPs and parameters together
  (`devices.within_budget`), so a client walks the one global LAMP order from the lowest score
  and stops at the first point where both fit: the later of the two cuts. The FLOPs a weight
  saves are not in its score (LAMP's score is about distortion, not cost).
- Only the target layers are scored and pruned (`prune_skip`; the classifier head stays dense
  by default); the official code prunes every Conv2d and Linear layer.
- No layer is pruned beyond MAX_RATE (0.99): a layer's largest 1% are not candidates, as no
  `fedrlprune` action prunes further. When all candidates are gone the budget is missed.
- Ties are cut exactly in the stable order; the official code keeps every weight whose score
  equals the threshold. The tail sums are accumulated from the largest weight down rather than
  as total minus prefix, which is the same sum with less rounding.
- Structured mode (not in the paper): the same score on each kept output channel's L1 norm (the
  score LAMP squares is the channel's norm, as `MagnitudeRanking` ranks channels by it), pruning
  whole channels; the paper and its code are unstructured only.
"""

from __future__ import annotations

import numpy as np

from fedrlprune.methods.rules import Account, FixedRule
from fedrlprune.state import Masks, State


def lamp_scores(magnitudes: np.ndarray) -> np.ndarray:
    """LAMP's score of each entry of a 1-D array of magnitudes (|w|, or channel L1 norms), at
    the same positions: its square over the sum of the squares of the entries at least as
    large, itself included (0 where that sum is 0)."""
    order = np.argsort(magnitudes, kind="stable")
    squares = np.square(np.asarray(magnitudes, dtype=np.float64)[order])
    tails = np.cumsum(squares[::-1])[::-1]  # tails[i]: sum of squares[i:]
    scores = np.empty_like(squares)
    scores[order] = np.divide(squares, tails, out=np.zeros_like(squares), where=tails > 0)
    return scores


def unit_magnitudes(state: State, masks: Masks, layer: str, mode: str) -> np.ndarray:
    """The magnitude of each unit `layer` still keeps, as `MagnitudeRanking` ranks them: |w| of
    each kept weight, or (structured) each kept output channel's L1 norm over its kept weights."""
    weight = np.asarray(state[f"{layer}.weight"])
    key = f"{layer}.weight"
    keep = masks[key] if key in masks else np.ones(weight.shape, dtype=bool)
    if mode == "unstructured":
        return np.abs(weight[keep])
    channels = weight.shape[0]
    alive = np.reshape(keep, (channels, -1)).any(axis=1)
    return np.where(keep, np.abs(weight), 0).reshape(channels, -1).sum(axis=1)[alive]


def lamp_counts(account: Account, magnitudes: dict[str, np.ndarray]) -> dict[str, int]:
    """Units of each layer to prune: the lowest LAMP scores over all layers, fewest first,
    until the model fits the budget (all candidates when it never does)."""
    scores, owner = [], []
    for i, unit in enumerate(account.layers):
        candidates = np.sort(lamp_scores(magnitudes[unit.name]))[: unit.cap - unit.dead]
        scores.append(candidates)
        owner.append(np.full(candidates.size, i))
    order = np.argsort(np.concatenate(scores), kind="stable")  # keeps each layer's own order
    who = np.concatenate(owner)[order]
    cut = _first_cut(account, who)
    counts = account.dead()
    for i, extra in enumerate(np.bincount(who[:cut], minlength=len(account.layers))):
        counts[account.layers[i].name] += int(extra)
    while cut < who.size and not account.fits(counts):  # FLOPs are rounded down per layer
        counts[account.layers[who[cut]].name] += 1
        cut += 1
    return counts


def _first_cut(account: Account, who: np.ndarray) -> int:
    """About how many units of the order `who` (layer index of each) bring the model inside the
    budget, counting FLOPs without rounding; one short, so the caller's exact walk decides."""
    params, flops = account.cost(account.dead())
    unit_params = np.array([u.unit_weights for u in account.layers], dtype=np.float64)[who]
    unit_flops = np.array([u.flops / u.size for u in account.layers])[who]
    need = [
        int(np.searchsorted(np.cumsum(costs), over, side="left")) + 1 if over > 0 else 0
        for costs, over in (
            (unit_params, params - account.budget.max_params),
            (unit_flops, flops - account.budget.max_flops),
        )
    ]
    return min(max(max(need) - 1, 0), who.size)


class Lamp(FixedRule):
    name = "lamp"
    summary = "fedrlprune's pipeline, per-layer rates from LAMP scores pruned to its step's budget"

    @classmethod
    def counts(cls, state: State, masks: Masks, account: Account, mode: str) -> dict[str, int]:
        magnitudes = {u.name: unit_magnitudes(state, masks, u.name, mode) for u in account.layers}
        return lamp_counts(account, magnitudes)
