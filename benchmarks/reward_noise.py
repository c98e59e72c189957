"""How noisy is the agent's reward, against how far apart the candidates it must rank are?

    .venv/bin/python benchmarks/reward_noise.py

LeNet-5 trained briefly on Fashion-MNIST (as the global model is early in a run), twelve
candidate rate vectors drawn inside one budget (30% of the dense FLOPs and parameters), and
each candidate scored on many disjoint held-out samples of two sizes: 100 (a validation split
of 68 to 200 samples) and REWARD_SAMPLES (the fixed reward sample). For each signal (accuracy,
loss, and accuracy - loss, the reward's quality part) it prints the noise (the std of one
candidate's score over the samples, averaged over candidates), the spread (the std of the
candidates' mean scores) and their ratio; and the cost term's spread over the candidates as it
was (shares of the dense model, weight 0.05) and as it is (shares of the budget, weight
`rl_cost_weight`). Writes benchmarks/results/reward-noise.json. About a minute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from fedrlprune.config import Config
from fedrlprune.data.loaders import load_dataset
from fedrlprune.devices import Budget
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import MagnitudeRanking
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.rl.env import ClientFeatures, PruningEnv, layer_infos
from fedrlprune.rl.prune import ACTION_RATES, REWARD_SAMPLES, SampleScore
from fedrlprune.training import as_tensors, get_state, train

SHAPE, TARGETS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]
CANDIDATES, DRAWS = 12, 16
OLD_WEIGHT, COST_WEIGHT = 0.05, Config().rl_cost_weight  # rl_cost_weight before and now
OUT = Path(__file__).parent / "results" / "reward-noise.json"


def trained_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """LeNet-5 after one epoch on 3,000 training images; the test set as the held-out pool."""
    ds = load_dataset("fashion-mnist")
    torch.manual_seed(0)
    model = build_model("lenet5", SHAPE, 10)
    x, y = as_tensors(ds.x_train[:3000], ds.y_train[:3000])
    train(model, x, y, epochs=1, batch_size=32, lr=0.05, momentum=0.9)
    xt, yt = as_tensors(ds.x_test, ds.y_test)
    return model, xt, yt


def candidates(model: torch.nn.Module) -> tuple[list[dict[str, float]], list[tuple[float, float]]]:
    """Rate vectors from random actions through the env's action wall, and each one's cost as
    (shares of the dense model, shares of the budget)."""
    dense, flops = sum(p.numel() for p in model.parameters()), total_flops(model, SHAPE)
    budget = Budget(0.3 * flops, 0.3 * dense)
    env = PruningEnv(
        layer_infos(model, SHAPE, TARGETS),
        total_params=dense,
        total_flops=flops,
        budget=budget,
        evaluate=lambda rates: 0.0,
        client=ClientFeatures(0.3, 0.3, 0.5, 0.5, 1.0),
        rates=ACTION_RATES,
    )
    rng = np.random.default_rng(0)
    rates, costs = [], []
    while len(rates) < CANDIDATES:
        env.reset()
        for _ in TARGETS:
            *_, info = env.step(int(rng.integers(len(ACTION_RATES))))
        if info["rates"] in rates:
            continue
        rates.append(info["rates"])
        f, p = info["flops"], info["params"]
        of_budget = (f / budget.max_flops + p / budget.max_params) / 2
        costs.append(((f / flops + p / dense) / 2, of_budget))
    return rates, costs


def figures(scores: np.ndarray) -> dict[str, float]:
    """scores: candidates x draws. Noise, spread and their ratio."""
    noise = float(scores.std(axis=1, ddof=1).mean())
    spread = float(scores.mean(axis=1).std(ddof=1))
    return {"noise": noise, "spread": spread, "spread_over_noise": spread / noise}


def main() -> None:
    start = time.perf_counter()
    torch.set_num_threads(1)
    model, xt, yt = trained_model()
    rates, costs = candidates(model)
    ranking = MagnitudeRanking(get_state(model), TARGETS, "unstructured")
    order = torch.from_numpy(np.random.default_rng(1).permutation(len(yt)))
    result: dict[str, object] = {"candidates": CANDIDATES, "draws": DRAWS}
    for size in (100, REWARD_SAMPLES):
        acc = np.zeros((CANDIDATES, DRAWS))
        loss = np.zeros((CANDIDATES, DRAWS))
        for d in range(DRAWS):
            idx = order[d * size : (d + 1) * size]
            score = SampleScore(model, get_state(model), ranking, TARGETS, xt[idx], yt[idx])
            for c, r in enumerate(rates):
                acc[c, d], loss[c, d] = score(r)
        result[f"samples_{size}"] = {
            "accuracy": figures(acc),
            "loss": figures(loss),
            "accuracy_minus_loss": figures(acc - loss),
        }
    dense_cost, budget_cost = np.array(costs).T
    result["cost_term_spread"] = {
        "before_shares_of_dense": float(OLD_WEIGHT * dense_cost.std(ddof=1)),
        "now_shares_of_budget": float(COST_WEIGHT * budget_cost.std(ddof=1)),
    }
    result["seconds"] = time.perf_counter() - start
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key}: {json.dumps(value)}")


if __name__ == "__main__":
    main()
