"""The Flower ServerApp: drives the federation's rounds (`federation/server.py`) over a Grid.

Only what touches Flower lives here: the handshake that maps SuperNodes to client ids, packing
each client's orders, the exchange (drops and timeouts), the checks on every reply, and the
results files as rounds finish. What a round does is `Federation`'s; the figures are
`experiments/stats.py`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrlprune.config import Config
from fedrlprune.data.federated import federate, federate_named, global_test, named_dataset
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.errors import FedRLPruneError, PayloadError, RunFailed
from fedrlprune.experiments.progress import RunProgress
from fedrlprune.experiments.results import RunRecorder, default_out_dir
from fedrlprune.experiments.stats import (
    Drops,
    failed_run,
    failure_line,
    layer_rates,
    round_line,
    round_row,
    summary,
)
from fedrlprune.federation import client as local_work
from fedrlprune.federation.checkpoint import CHECKPOINT, RunState, check_resumable, save_run_state
from fedrlprune.federation.client import client_data
from fedrlprune.federation.messages import Deployment, Expected, Reply
from fedrlprune.federation.server import Federation
from fedrlprune.fl import protocol
from fedrlprune.fl.validation import check_reply
from fedrlprune.methods.base import ClientData
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.state import State
from fedrlprune.training import as_tensors, batchnorm_statistics, set_state

log = logging.getLogger("fedrlprune")


def serve(
    grid: Grid,
    cfg: Config,
    out_dir: Path,
    *,
    model_fn: ModelFactory | None = None,
    data: ArrayDataset | None = None,
    live: bool | None = None,
    resume: RunState | None = None,
    simulation: bool = False,
) -> dict[str, Any]:
    """Run `cfg.rounds` federated rounds on `grid`, write the results, return the summary.

    `resume`: a checkpoint of this run (same config); the run goes on after its round, with the
    same sampling, models, masks and policies as if it had never stopped. `simulation`: the
    clients are simulated from the config the server holds, so there is no handshake, each
    message names its client, and the end-of-run deployment runs in this process.
    """
    started = time.perf_counter()
    fed = build_federation(cfg, model_fn, data, resume)
    before = resume.elapsed if resume is not None else 0.0  # wall seconds of earlier sessions
    rows, rates = (resume.rows, resume.rates) if resume is not None else (None, None)
    recorder = RunRecorder(out_dir, cfg, rows, rates)
    if resume is not None:  # said once run.log is open
        log.info("resuming %s after round %d of %d", out_dir, fed.done, cfg.rounds)

    def checkpoint(finished: bool = False) -> None:
        elapsed = before + time.perf_counter() - started
        run = fed.snapshot(recorder.rows, recorder.rates, elapsed, finished)
        save_run_state(out_dir / CHECKPOINT, run)

    try:
        with RunProgress(cfg.rounds, f"{cfg.method} {cfg.dataset}/{cfg.model}", live) as progress:
            connect = simulated_nodes if simulation else handshake
            nodes, stats = connect(grid, cfg, data)
            recorder.write_json("partitions.json", stats)
            fed.start({int(s["client"]): int(s["train"]) for s in stats})
            dense = protocol.record_bytes(protocol.pack(fed.state, {}))  # one dense model
            times = {"setup_seconds": time.perf_counter() - started}
            for rnd in range(fed.done + 1, cfg.rounds + 1):
                row = run_round(grid, nodes, fed, rnd, progress, recorder, dense, simulation)
                checkpoint()
                progress.round_done(rnd, round_line(row))
                stop_if_failed(recorder.rows, fed, cfg.max_failed_rounds)
            stop_if_failed(recorder.rows, fed, cfg.max_failed_rounds, finished=True)
            rounds_done = time.perf_counter()
            if simulation:
                per_client = simulated_deploy(fed, model_fn, data, progress)
            else:
                per_client = deploy(grid, nodes, fed, progress)
            times["deploy_seconds"] = time.perf_counter() - rounds_done
            progress.round_started(cfg.rounds, 1, "measure the deployed models' latency")
            timed = time.perf_counter()
            times["dense_latency_ms"] = fed.measure_latency(per_client)
            times["latency_seconds"] = time.perf_counter() - timed
        result = _summary(fed, recorder.rows, per_client, model_fn, data) | times
        result["wall_seconds"] = before + time.perf_counter() - started
        result["out_dir"] = str(out_dir)
        _save_models(fed, out_dir)
        checkpoint(finished=True)
        result = recorder.finish(result)
    except RunFailed as err:
        log.error("the run failed: %s", err)
        recorder.write_json("summary.json", _failed_summary(fed, recorder.rows, str(err)))
        recorder.close()
        raise
    except BaseException:
        recorder.close()
        raise
    log.info("results in %s", out_dir)
    return result


def stop_if_failed(
    rows: list[dict[str, Any]], fed: Federation, limit: int, finished: bool = False
) -> None:
    """RunFailed when the run cannot give a result: its last `limit` rounds (0: never) accepted
    no reply, or it ended without any round that did."""
    why = failed_run(rows, fed.dropped, limit, finished)
    if why is not None:
        raise RunFailed(why)


def _failed_summary(fed: Federation, rows: list[dict[str, Any]], error: str) -> dict[str, Any]:
    """summary.json of a run that stopped without a result: why, and no model figures (no
    client ever trained what they would describe)."""
    cfg = fed.cfg
    return {
        "status": "failed",
        "error": error,
        "method": cfg.method,
        "rounds_done": len(rows),
        "clients_replied": [int(r["clients_replied"]) for r in rows],
        "dropped_clients": fed.dropped,
    }


def _save_models(fed: Federation, out_dir: Path) -> None:
    """The global model (`global_model.pt`) and the method's own files (e.g. `policy.npz`)."""
    set_state(fed.model, fed.global_model())
    torch.save(fed.model.state_dict(), out_dir / "global_model.pt")
    for name, arrays in fed.method.artifacts().items():
        np.savez(out_dir / name, **arrays)  # type: ignore[arg-type]


def build_federation(
    cfg: Config,
    model_fn: ModelFactory | None,
    data: ArrayDataset | None,
    resume: RunState | None,
) -> Federation:
    """The federation's server for this config: the dataset's global test set, the initial
    model from the seed, and (when resuming) the checkpoint's state."""
    dataset = data if data is not None else named_dataset(cfg)
    test = as_tensors(*global_test(cfg, dataset))
    torch.manual_seed(cfg.seed)
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    model = factory(dataset.input_shape, dataset.num_classes)
    return Federation(cfg, model, dataset.input_shape, test, resume)


def run_round(
    grid: Grid,
    nodes: dict[int, int],
    fed: Federation,
    rnd: int,
    progress: RunProgress,
    recorder: RunRecorder,
    dense_bytes: int,
    simulation: bool = False,
) -> dict[str, Any]:
    """One federated round over the grid; returns its metrics.csv row (also recorded).
    `dense_bytes`: the wire size of one dense model, for `upload_vs_dense`; `simulation`: each
    message names the client it is for (any simulated node can serve any client)."""
    t0 = time.perf_counter()
    chosen = fed.sample(rnd)
    progress.round_started(rnd, len(chosen))
    if simulation:  # a simulated node of its own for each of the round's clients
        ids = sorted(set(nodes.values()))
        nodes = {c: ids[i % len(ids)] for i, c in enumerate(chosen)}
    orders = fed.orders(rnd, chosen)
    sent = {
        c: protocol.pack_orders(fed.cfg, o, fed.state, c if simulation else None)
        for c, o in orders.items()
    }
    replies, lost = exchange(grid, nodes, sent, "train", fed.cfg, rnd, progress)
    expected = {c: fed.expected(rnd, c, orders[c]) for c in replies}
    accepted, refused = accept(replies, expected, rnd)
    down = {c: protocol.download_bytes(content) for c, content in sent.items()}
    outcome = fed.settle(rnd, orders, accepted, lost | refused, down)
    if outcome.lost:
        log.warning(failure_line(rnd, len(chosen), outcome.lost))
    for cid, reply in accepted.items() if outcome.updated else ():
        rec = fed.fleet.clients[cid]
        heldout = cid in fed.fleet.heldout
        recorder.add_rates(rnd, cid, rec.tier, heldout, layer_rates(reply.metrics))
    row = round_row(outcome, dense_bytes, time.perf_counter() - t0)
    recorder.add_round(row)
    return row


def deploy(
    grid: Grid, nodes: dict[int, int], fed: Federation, progress: RunProgress
) -> list[dict[str, Any]]:
    """Every client prunes the final global model by the method's rule, evaluates it on its
    own test split and sends it back; returns the per-client figures."""
    cfg = fed.cfg
    progress.round_started(cfg.rounds, cfg.clients, "deploy and evaluate")
    sent = {c: protocol.pack_orders(cfg, o, fed.state) for c, o in fed.deploy_orders().items()}
    evals, lost = exchange(grid, nodes, sent, "evaluate", cfg, cfg.rounds, progress)
    answers: dict[int, Deployment] = {}
    for cid, reply in evals.items():
        try:
            answers[cid] = deploy_reply(reply, fed.state, recomputed_statistics(fed))
        except PayloadError as err:
            log.warning("client %d: no usable deployed model (%s)", cid, err)
            lost[cid] = ("refused", str(err))
    return fed.deployed(answers, lost)


def simulated_deploy(
    fed: Federation,
    model_fn: ModelFactory | None,
    data: ArrayDataset | None,
    progress: RunProgress,
) -> list[dict[str, Any]]:
    """`deploy` for simulated clients, without a message each: every client's own deployment
    step (`federation/client.deploy`, the code a SuperNode runs) in this process, on the model
    exactly as the message would carry it, one client after another on one shared model."""
    cfg = fed.cfg
    progress.round_started(cfg.rounds, cfg.clients, "deploy and evaluate")
    answers: dict[int, Deployment] = {}
    keys = recomputed_statistics(fed)
    template: ClientData | None = None
    for cid, orders in fed.deploy_orders().items():
        local = client_data(cfg, cid, model_fn, data, "server", like=template)
        template = template or local
        state = apply_masks(fed.state, orders.masks) if orders.masks else fed.state
        update = local_work.deploy(cfg, local, state, orders.masks, orders)
        acc = float(update.metrics["test-accuracy"])
        answers[cid] = Deployment(update.masks, acc, {k: update.state[k] for k in keys})
        progress.client_done()
    return fed.deployed(answers, {})


def _summary(
    fed: Federation,
    rows: list[dict[str, Any]],
    per_client: list[dict[str, Any]],
    model_fn: ModelFactory | None,
    data: ArrayDataset | None,
) -> dict[str, Any]:
    cfg, final = fed.cfg, fed.global_model()
    density = 1.0 - fed.facts.sparsity(final)
    return {
        "method": cfg.method,
        "dataset": cfg.dataset if data is None else data.name,
        "model": cfg.model if model_fn is None else "user",
        "clients": cfg.clients,
        "seed": cfg.seed,
        **summary(rows, per_client, fed.facts.cost(final), density, fed.failed),
        "dropped_clients": fed.dropped,
        "unreachable_budgets": fed.unreachable,
        # unstructured FLOPs count only kept weights: real only with sparse kernels
        "flops_kind": "compact" if cfg.structured else "theoretical",
        "rounds_without_update": [r["round"] for r in rows if not r["global_updated"]],
    }


def accept(
    replies: dict[int, Message], expected: dict[int, Expected], rnd: int
) -> tuple[dict[int, Reply], Drops]:
    """Check every reply (validation.py); a reply that does not fit is refused and logged."""
    accepted: dict[int, Reply] = {}
    refused: Drops = {}
    for cid, reply in replies.items():
        try:
            accepted[cid] = check_reply(reply.content, expected[cid])
        except PayloadError as err:
            refused[cid] = ("refused", f"reply refused: {err}")
    return accepted, refused


def recomputed_statistics(fed: Federation) -> list[str]:
    """The state keys a client recomputes before it deploys (`bn_refresh`): its BatchNorm
    statistics, which the server takes from its reply to score the model as deployed."""
    return batchnorm_statistics(fed.model) if fed.cfg.bn_refresh else []


def deploy_reply(reply: Message, reference: State, statistics: list[str]) -> Deployment:
    """A deployment reply's mask, local test accuracy and the `statistics` entries of its
    model; PayloadError if any is unusable."""
    if protocol.ARRAYS not in reply.content or protocol.METRICS not in reply.content:
        raise PayloadError("the reply lacks its model or its metrics")
    state, masks = protocol.unpack(reply.content.array_records[protocol.ARRAYS], reference)
    acc = reply.content.metric_records[protocol.METRICS].get("test-accuracy")
    if not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
        raise PayloadError(f"test-accuracy is {acc!r}, not a number in [0, 1]")
    return Deployment(masks, float(acc), {k: state[k] for k in statistics})


def handshake(
    grid: Grid, cfg: Config, data: ArrayDataset | None = None
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Wait up to `node_wait` s for every SuperNode to be online, then up to `node_wait` s more
    for each to load its data and say which client id it holds; return node ids by client id,
    and the partitions. Real devices only (`data` is unused: each device holds its own)."""
    wait = cfg.node_wait
    deadline = time.monotonic() + wait
    while len(node_ids := sorted(grid.get_node_ids())) < cfg.clients:
        if time.monotonic() > deadline:
            raise FedRLPruneError(
                f"only {len(node_ids)} of {cfg.clients} SuperNodes connected within "
                f"{cfg.node_wait:g} s; start one SuperNode per client, lower `clients`, or "
                "give them longer with `node_wait`"
            )
        time.sleep(0.2)
    content = RecordDict({protocol.CONFIG: protocol.config_record(cfg)})
    msgs = [
        Message(content, dst_node_id=node, message_type=protocol.QUERY, group_id="0")
        for node in node_ids
    ]
    nodes: dict[int, int] = {}
    stats: list[dict[str, Any]] = []
    replies = list(grid.send_and_receive(msgs, timeout=wait))
    for reply in replies:
        if reply.has_error():
            raise FedRLPruneError(
                f"a SuperNode failed the handshake (loading its data): {reply.error.reason}"
            )
        metrics = reply.content.metric_records[protocol.METRICS]
        cid = int(cast(int, metrics["client"]))
        if cid in nodes:
            raise FedRLPruneError(f"two SuperNodes claim partition-id={cid}; give each its own")
        nodes[cid] = reply.metadata.src_node_id
        stats.append(dict(metrics))
    if len(replies) < len(msgs):
        raise FedRLPruneError(
            f"{len(msgs) - len(replies)} of {len(msgs)} SuperNodes did not answer the handshake "
            f"within `node_wait` = {cfg.node_wait:g} s; check their logs, or raise `node_wait`"
        )
    if len(nodes) < cfg.clients:
        missing = sorted(set(range(cfg.clients)) - set(nodes))
        raise FedRLPruneError(f"no SuperNode holds client(s) {missing}; check their partition-id")
    return nodes, sorted(stats, key=lambda s: s["client"])


def simulated_nodes(
    grid: Grid, cfg: Config, data: ArrayDataset | None = None
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """The simulation's answer to the handshake: the partitions come from the config (and the
    user dataset) the server holds, and client `c` goes to simulated node `c` mod the nodes
    (one per client of a round, `simulated_nodes_for`), since every message names its client.
    One round's worth of clients still load their data
    first, without a time limit, so the workers' slow start never counts against round 1's
    `round_timeout`: a slow start means a busy machine, not a missing device."""
    while not (node_ids := sorted(grid.get_node_ids())):
        time.sleep(0.2)
    nodes = {cid: node_ids[cid % len(node_ids)] for cid in range(cfg.clients)}
    msgs = [
        Message(
            RecordDict({protocol.CONFIG: protocol.config_record(cfg, partition=cid)}),
            dst_node_id=nodes[cid], message_type=protocol.QUERY, group_id="0",
        )
        for cid in range(min(cfg.clients, cfg.per_round()))
    ]  # fmt: skip
    for reply in grid.send_and_receive(msgs):
        if reply.has_error():
            reason = reply.error.reason
            raise FedRLPruneError(f"a simulated client failed to load its data: {reason}")
    fed = federate_named(cfg) if data is None else federate(cfg, data)
    return nodes, [fed.client_stats(cid) for cid in range(cfg.clients)]


def exchange(
    grid: Grid,
    nodes: dict[int, int],
    sent: dict[int, RecordDict],
    kind: str,
    cfg: Config,
    rnd: int,
    progress: RunProgress,
) -> tuple[dict[int, Message], Drops]:
    """Send each chosen client its message content; return the replies in client
    order and the clients dropped: an error reply, no reply within `round_timeout` seconds
    (0: wait for all), or a message that could not be sent.

    Replies are matched by the id of the message they answer, never by sender: an error the
    SuperLink writes for an unreachable node comes from the SuperLink, and a late reply to an
    earlier round's message answers an id this call never waits for, so it is ignored.
    """
    msgs = {
        cid: Message(content, dst_node_id=nodes[cid], message_type=kind, group_id=str(rnd))
        for cid, content in sent.items()
    }
    pushed = {i for i in grid.push_messages(list(msgs.values())) if i}
    waiting = {m.metadata.message_id: cid for cid, m in msgs.items()}
    drops: Drops = {
        cid: ("error", "the message could not be sent")
        for mid, cid in waiting.items()
        if mid not in pushed
    }
    waiting = {mid: cid for mid, cid in waiting.items() if mid in pushed}
    deadline = time.monotonic() + cfg.round_timeout if cfg.round_timeout > 0 else math.inf
    replies: dict[int, Message] = {}
    while waiting:
        for reply in grid.pull_messages(list(waiting)):
            cid = waiting.pop(reply.metadata.reply_to_message_id, None)
            if cid is None:
                continue  # not a reply this call waits for
            if reply.has_error():
                drops[cid] = ("error", reply.error.reason or "no reason given")
            else:
                replies[cid] = reply
            progress.client_done()
        if waiting and time.monotonic() >= deadline:
            for cid in waiting.values():
                drops[cid] = ("timeout", f"no reply within round_timeout={cfg.round_timeout:g} s")
            break
        if waiting:
            time.sleep(0.05)
    return dict(sorted(replies.items())), dict(sorted(drops.items()))


def make_server_app(
    cfg: Config,
    out_dir: Path,
    *,
    model_fn: ModelFactory | None = None,
    data: ArrayDataset | None = None,
    live: bool | None = None,
    on_result: Callable[[dict[str, Any] | FedRLPruneError], None] | None = None,
    resume: RunState | None = None,
) -> ServerApp:
    """A ServerApp bound to a config (the simulation path of `fedrlprune run` and the API).
    `on_result` gets the summary, or the error a user can act on that stopped the run (the
    engine would bury it in its own log)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result: dict[str, Any] | FedRLPruneError = serve(
                grid, cfg, out_dir, model_fn=model_fn, data=data, live=live, resume=resume,
                simulation=True,
            )  # fmt: skip
        except FedRLPruneError as err:
            result = err
        if on_result is not None:
            on_result(result)

    return app


# The ServerApp that `flwr run` loads: its config is the run config of pyproject.toml
# ([tool.flwr.app.config]) with `flwr run --run-config` overrides; `out` names the results folder.
app = ServerApp()


@app.main()
def _flwr_main(grid: Grid, context: Context) -> None:
    cfg, out, resume = flwr_run_config(dict(context.run_config))
    serve(grid, cfg, out, live=False, resume=resume)


def flwr_run_config(values: dict[str, Any]) -> tuple[Config, Path, RunState | None]:
    """`flwr run`'s run config: the config keys, `out` (the results folder; empty: a fresh one)
    and `resume` (true: go on with the stopped run in `out`, whose config must be this one)."""
    values = dict(values)
    out = str(values.pop("out", "") or "")
    resume = bool(values.pop("resume", False))
    cfg = Config.from_dict(values)
    if not resume:
        return cfg, Path(out) if out else default_out_dir(cfg), None
    if not out:
        raise FedRLPruneError("resume=true needs out='RESULTS', the folder of the stopped run")
    cfg, run = check_resumable(Path(out), cfg)
    return cfg, Path(out), run
