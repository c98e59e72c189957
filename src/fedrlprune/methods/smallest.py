"""`smallest`: FedAvg of the largest model every device can train, the reference of HeteroFL's
paper for what heterogeneity-aware methods must beat.

Every client, whatever its tier, trains the same sub-model: the first channels of every layer
at the smallest width any tier of the run needs (HeteroFL's width rule, `heterofl.py`), so the
microcontroller's model is the federation's model. Replies merge by FedAvg's sample-weighted
mean over the entries the sub-model holds; the global model is that sub-model (its mask is the
global mask), so its accuracy is the accuracy every device deploys.
"""

from __future__ import annotations

from fedrlprune.federation.messages import Reply
from fedrlprune.methods.heterofl import HeteroFL
from fedrlprune.state import Masks, State


class Smallest(HeteroFL):
    name = "smallest"
    summary = "reference: FedAvg of the smallest tier's width-scaled model, trained by every client"
    aggregation = "vote"  # every client holds the same entries: FedAvg's weighted mean

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        """HeteroFL's width per tier, then the narrowest for everyone."""
        state, _ = super().start(state, global_masks, train_sizes)
        narrowest = min(self.rates.values())
        self.rates = dict.fromkeys(self.rates, narrowest)
        return state, self.cut(state, narrowest, 0)

    def merge(self, rnd: int, state: State, replies: dict[int, Reply]) -> tuple[State, Masks]:
        merged, _ = super().merge(rnd, state, replies)
        return merged, self.cut(merged, next(iter(self.rates.values())), rnd)
