"""FedAvg (McMahan et al., AISTATS 2017): dense models, the sample-weighted mean.

The reference every pruning method is measured against. It prunes nothing, so the interface's
defaults are its whole rule: the mask-vote merge over masks that keep everything is FedAvg.
"""

from __future__ import annotations

from fedrlprune.methods.base import Method


class FedAvg(Method):
    name = "fedavg"
    summary = "dense FedAvg, the reference"
