"""Framework overhead: a plain PyTorch loop against one federated round of the same client,
and what the pruning agent of `fedrlprune` costs beside local training.

Both train the same client split with the same model, epochs, batch size and optimiser, side by
side in one run. The federated figure is the server's wall time of a whole round (send the model,
client trains, reply, check, aggregate): what a user waits for. Rounds that evaluate the global
model are left out, as is the first round (Ray workers warming up). The agent's cost comes
from a `fedrlprune` run of the same client: per pruning round, its episodes (one validation
evaluation each, plus one greedy episode) and seconds against the round's local training.

    .venv/bin/python benchmarks/overhead.py --rounds 6 --out benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedrlprune.config import Config
from fedrlprune.data.federated import federate_named
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.models import build_model
from fedrlprune.training import as_tensors, train


def plain_seconds(cfg: Config, repeats: int) -> tuple[list[float], int]:
    """Seconds of each repeat of local training on client 0, single-threaded like a worker."""
    fed = federate_named(cfg)
    x, y = as_tensors(*fed.client(0)[:2])
    torch.set_num_threads(1)
    times = []
    for rep in range(repeats):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, fed.dataset.input_shape, fed.dataset.num_classes)
        result = train(
            model,
            x,
            y,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            seed=rep,
        )
        times.append(result.seconds)
    return times, len(y) * cfg.local_epochs


def metrics_rows(cfg: Config) -> list[dict[str, str]]:
    """The per-round rows of one run's metrics.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(cfg, out_dir=Path(tmp) / "run", live=False)
        return list(csv.DictReader((Path(tmp) / "run" / "metrics.csv").open()))


def federated_seconds(cfg: Config) -> tuple[list[float], list[float]]:
    """Round wall times and the client's own training times, leaving out warm-up and eval."""
    rows = [r for r in metrics_rows(cfg)[1:] if r["test_accuracy"] == ""]
    return [float(r["round_seconds"]) for r in rows], [
        float(r["client_train_seconds_mean"]) for r in rows
    ]


def agent_cost(cfg: Config) -> dict[str, float]:
    """Median seconds of the agent and of local training over the pruning rounds."""
    every = metrics_rows(cfg)
    rows = [r for r in every if r["rl_episodes"] not in ("", "0")]
    rl = statistics.median(float(r["rl_seconds_mean"]) for r in rows)
    local = statistics.median(float(r["client_train_seconds_mean"]) for r in rows)
    rl_all = sum(float(r["rl_seconds_mean"]) for r in rows)
    local_all = sum(float(r["client_train_seconds_mean"]) for r in every)
    return {
        "pruning_rounds": len(rows),
        "rl_episodes_per_round": int(rows[0]["rl_episodes"]),
        "rl_evaluations_per_round": int(rows[0]["rl_evaluations"]),
        "rl_seconds_per_round_median": rl,
        "local_train_seconds_per_round_median": local,
        "rl_share_of_client_time": rl / (rl + local),
        "rounds": len(every),
        "rl_share_of_client_time_whole_run": rl_all / (rl_all + local_all),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data-fraction", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    args = parser.parse_args()

    rounds = args.rounds + 1  # +1: the last round evaluates and is left out
    cfg = Config.from_dict(
        {
            "dataset": args.dataset,
            "model": args.model,
            "clients": 1,
            "rounds": rounds,
            "data_fraction": args.data_fraction,
            "eval_every": rounds,
            "method": "fedavg",
        }
    )
    plain, samples = plain_seconds(cfg, args.rounds)
    fed_round, fed_train = federated_seconds(cfg)
    plain_med, round_med = statistics.median(plain), statistics.median(fed_round)
    agent = agent_cost(Config.from_dict({"method": "fedrlprune", "prune_start": 0.0}, base=cfg))
    result = {
        "what": "samples per second: plain PyTorch loop vs one federated round, same client",
        "dataset": args.dataset,
        "model": args.model,
        "client_train_samples_per_round": samples,
        "plain_seconds_median": plain_med,
        "federated_round_seconds_median": round_med,
        "federated_client_train_seconds_median": statistics.median(fed_train),
        "plain_samples_per_second": samples / plain_med,
        "federated_samples_per_second": samples / round_med,
        "ratio_federated_over_plain": plain_med / round_med,
        "overhead_seconds_per_round": round_med - plain_med,
        "repeats": len(plain),
        "agent": agent,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"plain      {result['plain_samples_per_second']:10.0f} samples/s\n"
        f"federated  {result['federated_samples_per_second']:10.0f} samples/s\n"
        f"ratio      {result['ratio_federated_over_plain']:10.3f}  "
        f"(overhead {result['overhead_seconds_per_round']:.3f} s per round)\n"
        f"agent      {agent['rl_seconds_per_round_median']:10.3f} s per pruning round "
        f"({agent['rl_episodes_per_round']} episodes) against "
        f"{agent['local_train_seconds_per_round_median']:.3f} s of local training: "
        f"{100 * agent['rl_share_of_client_time']:.1f}% of the client's time in that round, "
        f"{100 * agent['rl_share_of_client_time_whole_run']:.1f}% over the run\n"
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()
