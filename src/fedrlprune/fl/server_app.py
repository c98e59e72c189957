"""The Flower ServerApp: one federated round after another, written down as it goes.

A round: sample clients (by client id, from the seed) -> send the global model -> collect and
check replies -> aggregate -> evaluate -> record. The math lives in `aggregation.py`, the files
in `experiments/results.py`; this module only moves data between them and Flower.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrlprune.config import Config
from fedrlprune.data.federated import global_test
from fedrlprune.data.loaders import ArrayDataset, load_dataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.experiments.progress import RunProgress
from fedrlprune.experiments.results import RunRecorder, default_out_dir
from fedrlprune.fl import protocol
from fedrlprune.fl.aggregation import fedavg
from fedrlprune.fl.training import as_tensors, evaluate, get_state, set_state
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.metrics import layer_flops, model_cost, total_flops

log = logging.getLogger("fedrlprune")

NODE_WAIT_SECONDS = 120.0  # how long to wait for every client's SuperNode to connect


def serve(
    grid: Grid,
    cfg: Config,
    out_dir: Path,
    *,
    model_fn: ModelFactory | None = None,
    data: ArrayDataset | None = None,
    live: bool | None = None,
) -> dict[str, Any]:
    """Run `cfg.rounds` federated rounds on `grid`, write the results, return the summary."""
    started = time.perf_counter()
    dataset = data if data is not None else load_dataset(cfg.dataset, cfg.data_path or None)
    x_test, y_test = as_tensors(*global_test(cfg, dataset))
    torch.manual_seed(cfg.seed)
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    model = factory(dataset.input_shape, dataset.num_classes)
    flops = layer_flops(model, dataset.input_shape)
    flops_total = total_flops(model, dataset.input_shape)
    state = get_state(model)

    recorder = RunRecorder(out_dir, cfg)
    title = f"{cfg.method} {cfg.dataset}/{cfg.model}"
    try:
        with RunProgress(cfg.rounds, title, live) as progress:
            nodes, stats = _handshake(grid, cfg)
            recorder.write_json("partitions.json", stats)
            rng = np.random.default_rng(cfg.seed)
            per_round = max(1, round(cfg.fraction * cfg.clients))
            failed: set[int] = set()
            for rnd in range(1, cfg.rounds + 1):
                t0 = time.perf_counter()
                chosen = sorted(rng.choice(cfg.clients, size=per_round, replace=False).tolist())
                progress.round_started(rnd, len(chosen))
                record = protocol.state_to_record(state)
                replies = _exchange(grid, nodes, chosen, "train", record, cfg, rnd, progress)
                states, weights, losses, secs, up = [], [], [], [], 0
                for cid, reply in replies.items():
                    try:
                        states.append(
                            protocol.record_to_state(reply.content[protocol.ARRAYS], state)
                        )
                    except (protocol.PayloadError, KeyError) as err:
                        log.warning("round %d: refused the reply of client %d: %s", rnd, cid, err)
                        continue
                    metrics = reply.content[protocol.METRICS]
                    weights.append(float(metrics["num-examples"]))
                    losses.append(float(metrics["train-loss"]))
                    secs.append(float(metrics["train-seconds"]))
                    up += protocol.record_bytes(reply.content[protocol.ARRAYS])
                if states:
                    state = fedavg(states, weights)
                else:
                    log.warning("round %d: no usable reply, the global model stays as it was", rnd)
                failed.update(set(chosen) - set(replies))
                set_state(model, state)
                evaluate_now = rnd % cfg.eval_every == 0 or rnd == cfg.rounds
                test_loss, test_acc = (
                    evaluate(model, x_test, y_test) if evaluate_now else (float("nan"),) * 2
                )
                row = {
                    "round": rnd,
                    "clients_selected": len(chosen),
                    "clients_replied": len(states),
                    "clients_failed": len(chosen) - len(states),
                    "train_loss": _weighted_mean(losses, weights),
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "upload_bytes": up,
                    "download_bytes": protocol.record_bytes(record) * len(chosen),
                    "round_seconds": time.perf_counter() - t0,
                    "client_train_seconds_mean": float(np.mean(secs)) if secs else float("nan"),
                }
                recorder.add_round(row)
                progress.round_done(rnd, _round_line(row))

            progress.round_started(cfg.rounds, cfg.clients, "final client evaluation")
            record = protocol.state_to_record(state)
            everyone = list(range(cfg.clients))
            evals = _exchange(grid, nodes, everyone, "evaluate", record, cfg, cfg.rounds, progress)
        client_acc = [float(m.content[protocol.METRICS]["test-accuracy"]) for m in evals.values()]
        cost = model_cost(model, dataset.input_shape, flops, flops_total)
        accs = [r["test_accuracy"] for r in recorder.rows if not np.isnan(r["test_accuracy"])]
        summary: dict[str, Any] = {
            "method": cfg.method,
            "dataset": cfg.dataset if data is None else data.name,
            "model": cfg.model if model_fn is None else "user",
            "clients": cfg.clients,
            "rounds_completed": len(recorder.rows),
            "seed": cfg.seed,
            "final_accuracy": accs[-1],
            "best_accuracy": max(accs),
            "client_accuracy_mean": _nanmean(client_acc),
            "client_accuracy_worst10": _worst_decile(client_acc),
            "dense_params": cost.dense_params,
            "nonzero_params": cost.nonzero_params,
            "param_reduction": cost.param_reduction,
            "dense_flops": cost.dense_flops,
            "effective_flops": cost.effective_flops,
            "flops_reduction": cost.flops_reduction,
            "upload_bytes_total": sum(r["upload_bytes"] for r in recorder.rows),
            "download_bytes_total": sum(r["download_bytes"] for r in recorder.rows),
            "failed_clients": sorted(failed | (set(everyone) - set(evals))),
            "wall_seconds": time.perf_counter() - started,
            "out_dir": str(out_dir),
        }
        torch.save(model.state_dict(), out_dir / "global_model.pt")
        recorder.finish(summary)
    except BaseException:
        recorder.close()
        raise
    log.info("results in %s", out_dir)
    return summary


def _handshake(grid: Grid, cfg: Config) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Wait for every SuperNode, learn which client id each holds; return ids and partitions."""
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while len(node_ids := sorted(grid.get_node_ids())) < cfg.clients:
        if time.monotonic() > deadline:
            raise FedRLPruneError(
                f"only {len(node_ids)} of {cfg.clients} SuperNodes connected within "
                f"{NODE_WAIT_SECONDS:.0f} s; start one SuperNode per client or lower `clients`"
            )
        time.sleep(0.2)
    content = RecordDict({protocol.CONFIG: protocol.config_record(cfg)})
    msgs = [
        Message(content, dst_node_id=node, message_type=protocol.QUERY, group_id="0")
        for node in node_ids
    ]
    nodes: dict[int, int] = {}
    stats: list[dict[str, Any]] = []
    for reply in grid.send_and_receive(msgs, timeout=NODE_WAIT_SECONDS):
        if reply.has_error():
            raise FedRLPruneError(f"a client could not load its data: {reply.error.reason}")
        metrics = reply.content[protocol.METRICS]
        cid = int(metrics["client"])
        if cid in nodes:
            raise FedRLPruneError(f"two SuperNodes claim partition-id={cid}; give each its own")
        nodes[cid] = reply.metadata.src_node_id
        stats.append(dict(metrics))
    if len(nodes) < cfg.clients:
        missing = sorted(set(range(cfg.clients)) - set(nodes))
        raise FedRLPruneError(f"no SuperNode holds client(s) {missing}; check their partition-id")
    return nodes, sorted(stats, key=lambda s: s["client"])


def _exchange(
    grid: Grid,
    nodes: dict[int, int],
    chosen: Iterable[int],
    kind: str,
    record: ArrayRecord,
    cfg: Config,
    rnd: int,
    progress: RunProgress,
) -> dict[int, Message]:
    """Send `record` to the chosen clients, collect replies (in client order), log failures."""
    by_node = {nodes[cid]: cid for cid in chosen}
    msgs = [
        Message(
            RecordDict(
                {protocol.ARRAYS: record, protocol.CONFIG: protocol.config_record(cfg, round=rnd)}
            ),
            dst_node_id=node,
            message_type=kind,
            group_id=str(rnd),
        )
        for node in by_node
    ]
    pending = set(grid.push_messages(msgs))
    replies: dict[int, Message] = {}
    while pending:
        for reply in grid.pull_messages(pending):
            pending.discard(reply.metadata.reply_to_message_id)
            cid = by_node[reply.metadata.src_node_id]
            if reply.has_error():
                log.warning("round %d: client %d failed: %s", rnd, cid, reply.error.reason)
            else:
                replies[cid] = reply
            progress.client_done(cid, not reply.has_error())
        if pending:
            time.sleep(0.05)
    return dict(sorted(replies.items()))


def _weighted_mean(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if values else float("nan")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _worst_decile(values: list[float]) -> float:
    """Mean accuracy of the worst 10% of clients (at least one): the clients a mean hides."""
    finite = sorted(v for v in values if np.isfinite(v))
    if not finite:
        return float("nan")
    return float(np.mean(finite[: max(1, len(finite) // 10)]))


def _round_line(row: dict[str, Any]) -> str:
    acc = row["test_accuracy"]
    shown = "" if np.isnan(acc) else f"acc {acc:.4f}  "
    return f"{shown}up {row['upload_bytes'] / 1e6:.2f} MB  {row['round_seconds']:.1f}s"


def make_server_app(
    cfg: Config,
    out_dir: Path,
    *,
    model_fn: ModelFactory | None = None,
    data: ArrayDataset | None = None,
    live: bool | None = None,
    on_summary: Callable[[dict[str, Any]], None] | None = None,
) -> ServerApp:
    """A ServerApp bound to a config (the simulation path of `fedrlprune run` and the API)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        summary = serve(grid, cfg, out_dir, model_fn=model_fn, data=data, live=live)
        if on_summary is not None:
            on_summary(summary)

    return app


# The ServerApp that `flwr run` loads: its config is the run config of pyproject.toml
# ([tool.flwr.app.config]) with `flwr run --run-config` overrides; `out` names the results folder.
app = ServerApp()


@app.main()
def _flwr_main(grid: Grid, context: Context) -> None:
    values = dict(context.run_config)
    out = str(values.pop("out", "") or "")
    cfg = Config.from_dict(values)
    serve(grid, cfg, Path(out) if out else default_out_dir(cfg), live=False)
