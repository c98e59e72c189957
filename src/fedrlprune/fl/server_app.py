"""The Flower ServerApp: one federated round after another, written down as it goes.

A round: sample clients (by client id, from the seed) -> send the global model -> collect and
check replies (dropping clients that fail, time out or send something unfit) -> aggregate when
at least `min_clients` replies were accepted -> evaluate -> record -> checkpoint. The math
lives in `aggregation.py`, the files in `experiments/`; this module only moves data between
them and Flower.
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
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrlprune.baselines.server import BaselinePlan, make_plan
from fedrlprune.config import Config
from fedrlprune.data.federated import global_test
from fedrlprune.data.loaders import ArrayDataset, load_dataset
from fedrlprune.devices import TIERS, simulated_round, training_flops
from fedrlprune.errors import FedRLPruneError, PayloadError
from fedrlprune.experiments.checkpoint import (
    CHECKPOINT,
    RunState,
    check_resumable,
    save_run_state,
)
from fedrlprune.experiments.progress import RunProgress
from fedrlprune.experiments.results import RunRecorder, default_out_dir
from fedrlprune.fl import protocol
from fedrlprune.fl.aggregation import aggregate_sparse
from fedrlprune.fl.fleet import Fleet, ModelFacts
from fedrlprune.fl.training import as_tensors, evaluate, get_state, set_state
from fedrlprune.fl.validation import Expected, Reply, check_reply
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.rl.federation import PolicyStore, save_policy
from fedrlprune.rl.prune import new_agent
from fedrlprune.state import Masks, State

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
) -> dict[str, Any]:
    """Run `cfg.rounds` federated rounds on `grid`, write the results, return the summary.

    `resume`: a checkpoint of this run (same config); the run goes on after its round, with the
    same sampling, models, masks and policies as if it had never stopped.
    """
    started = time.perf_counter()
    dataset = data if data is not None else load_dataset(cfg.dataset, cfg.data_path or None)
    x_test, y_test = as_tensors(*global_test(cfg, dataset))
    torch.manual_seed(cfg.seed)
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    model = factory(dataset.input_shape, dataset.num_classes)
    facts = ModelFacts.of(model, dataset.input_shape, cfg.skip_list(), cfg.structured)
    fleet = Fleet(cfg, facts)
    policies = PolicyStore(new_agent(cfg.seed).get_weights(), cfg.rl_policy, fleet.trainer)
    plan = make_plan(cfg, fleet)  # None for fedrlprune, fedavg and magnitude
    state = get_state(model)
    global_masks: Masks = {}
    dense_upload = protocol.record_bytes(protocol.pack(state, {}))  # one dense model
    rng = np.random.default_rng(cfg.seed)
    failed: set[int] = set()
    dropped: dict[str, list[dict[str, Any]]] = {}  # round (or "deploy") -> dropped clients
    done, before = 0, 0.0  # rounds completed and wall seconds spent in earlier sessions
    if resume is not None:
        state, global_masks = resume.state, resume.global_masks
        for cid, rec in enumerate(fleet.clients):
            rec.masks = resume.client_masks.get(cid)
            rec.seen_rounds = list(resume.seen_rounds.get(cid, []))
        policies.universal, policies.own = resume.universal, dict(resume.own_policies)
        rng.bit_generator.state = resume.rng_state
        failed, dropped = set(resume.failed), dict(resume.dropped)
        done, before = resume.round, resume.elapsed

    def checkpoint(rnd: int, finished: bool = False) -> None:
        save_run_state(
            out_dir / CHECKPOINT,
            RunState(
                round=rnd,
                config=cfg.to_dict(),
                state=state,
                global_masks=global_masks,
                client_masks={c.cid: c.masks for c in fleet.clients if c.masks is not None},
                seen_rounds={c.cid: c.seen_rounds for c in fleet.clients if c.seen_rounds},
                universal=policies.universal,
                own_policies=policies.own,
                rng_state=dict(rng.bit_generator.state),
                rows=recorder.rows,
                rates=recorder.rates,
                dropped=dropped,
                failed=sorted(failed),
                elapsed=before + time.perf_counter() - started,
                finished=finished,
            ),
        )

    recorder = RunRecorder(
        out_dir, cfg, resume.rows if resume else None, resume.rates if resume else None
    )
    if resume is not None:  # said once run.log is open
        log.info("resuming %s after round %d of %d", out_dir, done, cfg.rounds)
    title = f"{cfg.method} {cfg.dataset}/{cfg.model}"
    try:
        with RunProgress(cfg.rounds, title, live) as progress:
            nodes, stats = _handshake(grid, cfg)
            recorder.write_json("partitions.json", stats)
            if plan is not None:
                state, global_masks = plan.start(state, {s["client"]: s["train"] for s in stats})
            for rnd in range(done + 1, cfg.rounds + 1):
                t0 = time.perf_counter()
                chosen = sorted(
                    rng.choice(cfg.clients, size=cfg.per_round(), replace=False).tolist()
                )
                progress.round_started(rnd, len(chosen))
                if plan is not None:
                    state, global_masks = plan.before_round(rnd, state, global_masks)
                sent_masks = {c: _masks(fleet, plan, c, rnd, state, global_masks) for c in chosen}
                core = fleet.core_masks() if cfg.method == "fedrlprune" and cfg.train_core else {}
                sent = {
                    c: _instructions(cfg, fleet, policies, plan, c, rnd, state, sent_masks[c], core)
                    for c in chosen
                }
                down = {
                    c: sum(protocol.record_bytes(r) for r in recs.values())
                    for c, (recs, _) in sent.items()
                }
                replies, lost = _exchange(grid, nodes, sent, "train", cfg, rnd, progress)
                expected = {
                    c: Expected(
                        state,
                        sent_masks[c],
                        int(stats[c]["train"]),
                        policies.universal if protocol.POLICY in sent[c][0] else None,
                        plan.importance_layout(rnd) if plan is not None else None,
                        plan is not None and plan.may_move,
                    )
                    for c in chosen
                }
                accepted, refused = _accept(replies, expected, rnd)
                lost |= refused
                failed.update(lost)
                if lost:
                    dropped[str(rnd)] = _drop_entries(lost)
                sim_seconds, sim_joules = 0.0, 0.0
                for cid, reply in accepted.items():
                    secs, joules = _simulated(fleet, cid, reply, down[cid], core)
                    if plan is not None:
                        plan.observe(cid, reply, secs)
                    sim_seconds, sim_joules = max(sim_seconds, secs), sim_joules + joules
                updated = len(accepted) >= cfg.min_clients
                if updated:
                    policies.update(
                        {c: r.policy for c, r in accepted.items() if r.policy is not None}
                    )
                    for cid, reply in accepted.items():
                        if plan is None or plan.keeps_own_masks:
                            fleet.clients[cid].masks = reply.masks or None
                        fleet.clients[cid].seen_rounds.append(rnd)
                        recorder.add_rates(
                            rnd,
                            cid,
                            fleet.clients[cid].tier,
                            cid in fleet.heldout,
                            _rates(reply.metrics),
                        )
                    options = (
                        plan.aggregation()
                        if plan is not None
                        else {
                            "vote_threshold": cfg.vote_threshold,
                            "target_sparsity": cfg.server_sparsity or None,
                        }
                    )
                    state, global_masks = aggregate_sparse(
                        [r.state for r in accepted.values()],
                        [r.masks for r in accepted.values()],
                        [float(r.metrics["num-examples"]) for r in accepted.values()],
                        state,
                        rule=cfg.aggregation_rule(),
                        unkept=cfg.unkept,
                        **options,
                    )
                    if plan is not None:
                        state, global_masks = plan.after_aggregate(rnd, state, global_masks)
                else:
                    log.warning(
                        "round %d: %d accepted replies, fewer than min_clients=%d: the global "
                        "model, masks and policy stay as they were",
                        rnd,
                        len(accepted),
                        cfg.min_clients,
                    )
                deployed = apply_masks(state, global_masks)
                set_state(model, deployed)
                evaluate_now = rnd % cfg.eval_every == 0 or rnd == cfg.rounds
                test_loss, test_acc = (
                    evaluate(model, x_test, y_test) if evaluate_now else (float("nan"),) * 2
                )
                cost = facts.cost(deployed)
                metrics_of = [r.metrics for r in accepted.values()]
                weights = [float(m["num-examples"]) for m in metrics_of]
                row = {
                    "round": rnd,
                    "clients_selected": len(chosen),
                    "clients_replied": len(accepted),
                    "clients_failed": len(chosen) - len(accepted),
                    "clients_dropped": ";".join(str(c) for c in sorted(lost)),
                    "global_updated": int(updated),
                    "train_loss": _weighted_mean(
                        [float(m["train-loss"]) for m in metrics_of], weights
                    ),
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "sparsity": _target_sparsity(facts, deployed),
                    "nonzero_params": cost.nonzero_params,
                    "effective_flops": cost.effective_flops,
                    "upload_bytes": sum(r.upload_bytes for r in accepted.values()),
                    "upload_vs_dense": sum(r.upload_bytes for r in accepted.values())
                    / (dense_upload * max(len(accepted), 1)),
                    "download_bytes": sum(down.values()),
                    "round_seconds": time.perf_counter() - t0,
                    "client_train_seconds_mean": _mean(
                        [float(m["train-seconds"]) for m in metrics_of]
                    ),
                    "rl_seconds_mean": _mean(
                        [float(m["rl-seconds"]) for m in metrics_of if "rl-seconds" in m]
                    ),
                    "rl_episodes": sum(int(m.get("rl-episodes", 0)) for m in metrics_of),
                    "rl_evaluations": sum(int(m.get("rl-evaluations", 0)) for m in metrics_of),
                    "sim_seconds": sim_seconds,
                    "sim_joules": sim_joules,
                }
                recorder.add_round(row)
                checkpoint(rnd)
                progress.round_done(rnd, _round_line(row))

            # Deployment: every client (held out or never selected too) prunes the final global
            # model to its final budget by the method's rule, evaluates it and sends it back. A
            # client that does not answer keeps the mask the server knows and no local accuracy.
            progress.round_started(cfg.rounds, cfg.clients, "deploy and evaluate")
            everyone = list(range(cfg.clients))
            final = {c: _masks(fleet, plan, c, 0, state, global_masks) for c in everyone}
            sent = {
                c: _instructions(cfg, fleet, policies, plan, c, 0, state, final[c])
                for c in everyone
            }
            evals, lost = _exchange(grid, nodes, sent, "evaluate", cfg, cfg.rounds, progress)
            deployed_by: dict[int, State] = {}
            local_acc: dict[int, float] = {}
            for cid in everyone:
                if cid in evals:
                    try:
                        masks, local_acc[cid] = _deploy_reply(evals[cid], state)
                        fleet.clients[cid].masks = masks or fleet.clients[cid].masks
                    except PayloadError as err:
                        log.warning("client %d: no usable deployed model (%s)", cid, err)
                        lost[cid] = ("refused", str(err))
                deployed_by[cid] = fleet.deployed(cid, state, global_masks)
            if lost:
                dropped["deploy"] = _drop_entries(lost)
        per_client = []
        for cid in everyone:
            set_state(model, deployed_by[cid])
            entry = fleet.report(cid, deployed_by[cid])
            entry["accuracy_global_test"] = evaluate(model, x_test, y_test)[1]
            entry["accuracy_local_test"] = local_acc.get(cid, float("nan"))
            per_client.append(entry)
        set_state(model, apply_masks(state, global_masks))
        summary = _summary(
            cfg, model_fn, data, facts, recorder.rows, per_client, state, global_masks, failed
        )
        summary["dropped_clients"] = dropped
        summary["rounds_without_update"] = [
            r["round"] for r in recorder.rows if not r["global_updated"]
        ]
        summary["wall_seconds"] = before + time.perf_counter() - started
        summary["out_dir"] = str(out_dir)
        torch.save(model.state_dict(), out_dir / "global_model.pt")
        checkpoint(cfg.rounds, finished=True)
        save_policy(out_dir / "policy.npz", policies.universal)
        summary = recorder.finish(summary)
    except BaseException:
        recorder.close()
        raise
    log.info("results in %s", out_dir)
    return summary


Payload = tuple[dict[str, ArrayRecord], dict[str, Any]]  # records and per-call values


def _masks(
    fleet: Fleet,
    plan: BaselinePlan | None,
    cid: int,
    rnd: int,
    state: State,
    global_masks: Masks,
) -> Masks:
    """The mask client `cid` is sent in round `rnd` (0: deployment): the baseline's choice, or
    its own mask (the global one before it has pruned; both together at deployment)."""
    if plan is not None:
        return plan.masks_for(cid, rnd, state, global_masks)
    if rnd == 0:
        return fleet.deploy_masks(cid, global_masks)
    return fleet.masks_for(cid, global_masks, rnd)


def _instructions(
    cfg: Config,
    fleet: Fleet,
    policies: PolicyStore,
    plan: BaselinePlan | None,
    cid: int,
    rnd: int,
    state: State,
    masks: Masks,
    core: Masks | None = None,
) -> Payload:
    """What client `cid` gets: the global model under `masks`, and the method's orders for this
    round (`rnd` = 0: deployment, prune to the final budget without training the policy);
    `core`, when given, is the sub-network it trains as a model of its own beside its own."""
    records = {protocol.ARRAYS: protocol.pack(state, masks)}
    if core:
        records[protocol.CORE] = protocol.pack_masks(core)
    extras: dict[str, Any] = {"round": rnd or cfg.rounds}
    if plan is not None:
        extras |= plan.extras(cid, rnd)
    elif cfg.method == "magnitude":
        final = fleet.clients[cid].final_rate
        extras["prune_rate"] = final if rnd == 0 else fleet.rate_now(cid, rnd)
    elif cfg.method == "fedrlprune" and (
        fleet.step(rnd) or (rnd == 0 and not fleet.fits_final(cid, state, masks))
    ):
        # at deployment a client keeps the mask it was last trained under when that fits its
        # final budget: asking the policy again could only prune weights it never trained without
        extras |= fleet.rl_extras(cid, fleet.step(rnd) if rnd else 0, learn=rnd > 0)
        records[protocol.POLICY] = protocol.pack(policies.for_client(cid), {})
    return records, extras


def _rates(metrics: dict[str, Any]) -> dict[str, float]:
    return {k.removeprefix("rate/"): float(v) for k, v in metrics.items() if k.startswith("rate/")}


Drops = dict[int, tuple[str, str]]  # client -> (reason: error, timeout or refused; detail)


def _accept(
    replies: dict[int, Message], expected: dict[int, Expected], rnd: int
) -> tuple[dict[int, Reply], Drops]:
    """Check every reply (validation.py); a reply that does not fit is refused and logged."""
    accepted: dict[int, Reply] = {}
    refused: Drops = {}
    for cid, reply in replies.items():
        try:
            accepted[cid] = check_reply(reply.content, expected[cid])
        except PayloadError as err:
            log.warning("round %d: refused the reply of client %d: %s", rnd, cid, err)
            refused[cid] = ("refused", str(err))
    return accepted, refused


def _drop_entries(drops: Drops) -> list[dict[str, Any]]:
    """Dropped clients as summary.json lists them: client, reason, detail, in client order."""
    return [
        {"client": cid, "reason": reason, "detail": detail}
        for cid, (reason, detail) in sorted(drops.items())
    ]


def _deploy_reply(reply: Message, reference: State) -> tuple[Masks, float]:
    """A deployment reply's mask and local test accuracy; PayloadError if either is unusable."""
    if protocol.ARRAYS not in reply.content or protocol.METRICS not in reply.content:
        raise PayloadError("the reply lacks its model or its metrics")
    _, masks = protocol.unpack(reply.content.array_records[protocol.ARRAYS], reference)
    acc = reply.content.metric_records[protocol.METRICS].get("test-accuracy")
    if not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
        raise PayloadError(f"test-accuracy is {acc!r}, not a number in [0, 1]")
    return masks, float(acc)


def _simulated(
    fleet: Fleet, cid: int, reply: Reply, download_bytes: int, core: Masks
) -> tuple[float, float]:
    """Device-simulated (seconds, joules) of this client's round on its tier, every record it
    was sent counted in its download. The reply's state is already zero where its mask prunes,
    so its compute is the pruned model's, plus the core's forward and backward pass when the
    client trained it too (a core smaller than its own model)."""
    own = fleet.facts.cost(reply.state)
    flops = own.effective_flops
    if core:
        # the client's rule (client_app._core): it trains the core within its own mask unless
        # that is its whole model, i.e. unless it keeps as many weights as the model itself
        sub = fleet.facts.cost(apply_masks(reply.state, core))
        if sub.nonzero_params < own.nonzero_params:
            flops += sub.effective_flops
    samples = int(reply.metrics["num-examples"]) * int(reply.metrics.get("epochs", 1))
    profile = TIERS[fleet.clients[cid].tier]
    return simulated_round(
        profile, training_flops(flops, samples), reply.upload_bytes, download_bytes
    )


def _target_sparsity(facts: ModelFacts, state: State) -> float:
    """Share of zero weights over the pruned layers (0 when nothing is pruned)."""
    total = sum(facts.weights.values())
    zeros = sum(
        int(np.size(state[f"{t}.weight"]) - np.count_nonzero(state[f"{t}.weight"]))
        for t in facts.targets
    )
    return zeros / total if total else 0.0


def _summary(
    cfg: Config,
    model_fn: ModelFactory | None,
    data: ArrayDataset | None,
    facts: ModelFacts,
    rows: list[dict[str, Any]],
    per_client: list[dict[str, Any]],
    state: State,
    global_masks: Masks,
    failed: set[int],
) -> dict[str, Any]:
    cost = facts.cost(apply_masks(state, global_masks))
    accs = [r["test_accuracy"] for r in rows if not np.isnan(r["test_accuracy"])]
    local = [c["accuracy_local_test"] for c in per_client]
    deployed_params = _mean([c["nonzero_params"] for c in per_client])
    deployed_flops = _mean([c["effective_flops"] for c in per_client])
    return {
        "method": cfg.method,
        "dataset": cfg.dataset if data is None else data.name,
        "model": cfg.model if model_fn is None else "user",
        "clients": cfg.clients,
        "rounds_completed": len(rows),
        "seed": cfg.seed,
        "final_accuracy": accs[-1],
        "best_accuracy": max(accs),
        "client_accuracy_mean": _mean(local),
        "client_accuracy_worst10": _worst_decile(local),
        "dense_params": cost.dense_params,
        "nonzero_params": cost.nonzero_params,
        "param_reduction": cost.param_reduction,
        "dense_flops": cost.dense_flops,
        "effective_flops": cost.effective_flops,
        "flops_reduction": cost.flops_reduction,
        "pruned_layers_density": 1.0 - _target_sparsity(facts, apply_masks(state, global_masks)),
        "layer_density": cost.layer_density,
        "deployed_accuracy_mean": _mean([c["accuracy_global_test"] for c in per_client]),
        "deployed_nonzero_params_mean": deployed_params,
        "deployed_effective_flops_mean": deployed_flops,
        "deployed_param_reduction": cost.dense_params / deployed_params,
        "deployed_flops_reduction": cost.dense_flops / deployed_flops,
        "budget_satisfaction": _mean([float(c["within_budget"]) for c in per_client]),
        **_groups(per_client),
        "train_seconds_total": sum(
            r["client_train_seconds_mean"] * r["clients_replied"]
            for r in rows
            if r["clients_replied"]
        ),
        "rl_seconds_total": sum(
            r["rl_seconds_mean"] * r["clients_replied"]
            for r in rows
            if not np.isnan(r["rl_seconds_mean"])
        ),
        "rl_episodes_total": sum(r["rl_episodes"] for r in rows),
        "rl_evaluations_total": sum(r["rl_evaluations"] for r in rows),
        "upload_bytes_total": sum(r["upload_bytes"] for r in rows),
        "upload_vs_dense_last_round": rows[-1]["upload_vs_dense"],
        "download_bytes_total": sum(r["download_bytes"] for r in rows),
        "sim_seconds_total": sum(r["sim_seconds"] for r in rows),
        "sim_joules_total": sum(r["sim_joules"] for r in rows),
        "failed_clients": sorted(
            failed | {c["client"] for c in per_client if np.isnan(c["accuracy_local_test"])}
        ),
        "per_client": per_client,
    }


def _handshake(grid: Grid, cfg: Config) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Wait up to `node_wait` s for every SuperNode to be online, then up to `node_wait` s more
    for each to load its data and say which client id it holds; return node ids by client id,
    and the partitions."""
    deadline = time.monotonic() + cfg.node_wait
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
    replies = list(grid.send_and_receive(msgs, timeout=cfg.node_wait))
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


def _exchange(
    grid: Grid,
    nodes: dict[int, int],
    sent: dict[int, Payload],
    kind: str,
    cfg: Config,
    rnd: int,
    progress: RunProgress,
) -> tuple[dict[int, Message], Drops]:
    """Send each chosen client its records and per-call values; return the replies in client
    order and the clients dropped: an error reply, no reply within `round_timeout` seconds
    (0: wait for all), or a message that could not be sent.

    Replies are matched by the id of the message they answer, never by sender: an error the
    SuperLink writes for an unreachable node comes from the SuperLink, and a late reply to an
    earlier round's message answers an id this call never waits for, so it is ignored.
    """
    msgs = {
        cid: Message(
            RecordDict({**records, protocol.CONFIG: protocol.config_record(cfg, **extras)}),
            dst_node_id=nodes[cid],
            message_type=kind,
            group_id=str(rnd),
        )
        for cid, (records, extras) in sent.items()
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
                log.warning("round %d: client %d failed: %s", rnd, cid, reply.error.reason)
                drops[cid] = ("error", reply.error.reason or "no reason given")
            else:
                replies[cid] = reply
            progress.client_done(cid, not reply.has_error())
        if waiting and time.monotonic() >= deadline:
            for cid in waiting.values():
                log.warning(
                    "round %d: client %d did not reply within round_timeout=%g s; dropped",
                    rnd,
                    cid,
                    cfg.round_timeout,
                )
                drops[cid] = ("timeout", f"no reply within {cfg.round_timeout:g} s")
            break
        if waiting:
            time.sleep(0.05)
    return dict(sorted(replies.items())), dict(sorted(drops.items()))


def _groups(per_client: list[dict[str, Any]]) -> dict[str, float]:
    """Budget satisfaction and deployed accuracy of the clients that trained the policy and of
    the held-out ones, side by side: the generalisation the universal policy claims."""
    out = {}
    for name, heldout in (("trained", False), ("heldout", True)):
        group = [c for c in per_client if c["heldout"] == heldout]
        out[f"budget_satisfaction_{name}"] = _mean([float(c["within_budget"]) for c in group])
        out[f"deployed_accuracy_{name}"] = _mean([c["accuracy_global_test"] for c in group])
    return out


def _weighted_mean(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if values else float("nan")


def _mean(values: list[float]) -> float:
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
    resume: RunState | None = None,
) -> ServerApp:
    """A ServerApp bound to a config (the simulation path of `fedrlprune run` and the API)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        summary = serve(grid, cfg, out_dir, model_fn=model_fn, data=data, live=live, resume=resume)
        if on_summary is not None:
            on_summary(summary)

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
