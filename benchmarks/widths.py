"""HeteroFL's width per device tier: the budget's rate against the paper's ladder of rates.

    .venv/bin/python benchmarks/widths.py [model] [shape]   # default: cnn 1x28x28

prints, for each tier, the width `heterofl` picks (the largest whose compact sub-model fits
the budget) and the largest of the paper's levels (1, 1/2, 1/4, 1/8, 1/16) that fits, each with
its compact model's parameters and FLOPs as shares of the tier's budget. The figures
`docs/methods.md` quotes; they are counts from the model's shapes, the same on any machine.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from fedrlprune.config import Config
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.methods.heterofl import HeteroFL, largest_fitting, width_rates
from fedrlprune.models import build_model
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.training import get_state

LADDER = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)  # the paper's levels e, d, c, b, a


def main(name: str = "cnn", shape: tuple[int, ...] = (1, 28, 28)) -> None:
    cfg = Config.from_dict({"method": "heterofl", "clients": 4, "device_mix": "mixed"})
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    facts = ModelFacts.of(model, shape, cfg.skip_list(), structured=True)
    method = HeteroFL(cfg, Fleet(cfg, facts))
    state = get_state(model)
    ones = {key: np.ones_like(value) for key, value in state.items()}
    print(f"{name} {shape}: {facts.dense_params} params, {facts.total_flops} FLOPs dense")
    print("tier    rule    rate    params  (of budget)     FLOPs  (of budget)")
    for rec in sorted(method.fleet.clients, key=lambda r: r.budget.max_params):
        for rule, rates in (("budget", width_rates(facts.groups or ())), ("ladder", LADDER)):
            rate = largest_fitting(rates, lambda r, b=rec.budget: method.fits(ones, b, r))
            compact = compact_model(model, method.cut(state, rate, 1), shape)
            params = sum(p.numel() for p in compact.parameters())
            flops = total_flops(compact, shape)
            shares = params / rec.budget.max_params, flops / rec.budget.max_flops
            print(
                f"{rec.tier:7} {rule:7} {rate:.4f} {params:9d} ({shares[0]:6.1%})"
                f" {flops:10d} ({shares[1]:6.1%})"
            )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:1], *[tuple(int(x) for x in a.split("x")) for a in args[1:2]])
