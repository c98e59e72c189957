"""The federation's server, without Flower: its state, one round as named steps, deployment.

A round: `sample` clients (by client id, from the seed) -> `orders` for each (the method's
mask and orders) -> the transport delivers them and checks the replies against `expected` ->
`settle` (simulated device cost, what the method learns, the merge when at least `min_clients`
replies were accepted, the evaluation) -> `snapshot` for the checkpoint. At the end,
`deploy_orders` for every client, and `deployed` turns their answers into per-client figures.
`fl/server_app.py` drives these steps over Flower; a test can drive them directly.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedrlprune.devices import TIERS, Budget, over_budget, simulated_round, training_flops
from fedrlprune.experiments.latency import deployed_latency, latency_fields
from fedrlprune.experiments.stats import Drops, RoundOutcome, drop_entries
from fedrlprune.federation.checkpoint import RunState
from fedrlprune.federation.client import core_within
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.federation.messages import Deployment, Expected, Orders, Reply
from fedrlprune.methods import METHODS
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.pruning.memory import Footprint
from fedrlprune.pruning.schedule import MAX_RATE
from fedrlprune.state import Masks, State
from fedrlprune.training import evaluate, get_state, set_state
from fedrlprune.training_plan import TrainingFootprint, fit_training

if TYPE_CHECKING:
    from fedrlprune.config import Config

log = logging.getLogger("fedrlprune")


class Federation:
    """The server's state: global model and mask, fleet and budgets, the method, sampling."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        input_shape: tuple[int, ...],
        test: tuple[torch.Tensor, torch.Tensor],
        resume: RunState | None = None,
    ) -> None:
        self.cfg, self.model, self.test, self.input_shape = cfg, model, test, input_shape
        self.facts = ModelFacts.of(model, input_shape, cfg.skip_list(), cfg.structured)
        self.fleet = Fleet(cfg, self.facts)
        self.method = METHODS[cfg.method](cfg, self.fleet)
        self.state: State = get_state(model)
        self.global_masks: Masks = {}
        self.rng = np.random.default_rng(cfg.seed)
        self.failed: set[int] = set()
        self.dropped: dict[str, list[dict[str, Any]]] = {}  # round (or "deploy") -> dropped
        self.done = 0  # rounds completed (in earlier sessions, when resumed)
        self.train_sizes: dict[int, int] = {}
        self.unreachable: list[str] = []  # tiers whose budget the model cannot meet
        if resume is not None:
            self._restore(resume)

    def _restore(self, run: RunState) -> None:
        self.state, self.global_masks = run.state, run.global_masks
        for cid, rec in enumerate(self.fleet.clients):
            rec.masks = run.client_masks.get(cid)
            rec.seen_rounds = list(run.seen_rounds.get(cid, []))
        self.method.restore(run.method)
        self.rng.bit_generator.state = run.rng_state
        self.failed, self.dropped, self.done = set(run.failed), dict(run.dropped), run.round

    # ------------------------------------------------------------------------- one round

    def start(self, train_sizes: dict[int, int]) -> None:
        """Once the clients have said how many training samples each holds."""
        self.train_sizes = train_sizes
        self.unreachable = self._unreachable_budgets()
        self.state, self.global_masks = self.method.start(
            self.state, self.global_masks, train_sizes
        )

    def _unreachable_budgets(self) -> list[str]:
        """The device tiers whose budget this model cannot meet even with every pruned layer at
        the largest rate, on any limit (parameters, FLOPs, memory, as the summary counts them):
        said before round 1, with the way out, not found in the summary."""
        targets = dict.fromkeys(self.facts.targets, MAX_RATE)
        mode = "structured" if self.cfg.structured else "unstructured"
        floor = magnitude_masks(self.state, targets, mode, None, self.facts.groups)
        least = self.facts.footprint(self.state, floor)
        missed = []
        for tier in sorted({rec.tier for rec in self.fleet.clients}):
            limit = next(r.budget for r in self.fleet.clients if r.tier == tier)
            over = over_budget(limit, least.flops, least.params, least.memory_bytes)
            if not over and not self._trainable(floor, limit.max_memory):
                over = ["memory in training"]
            if over:
                missed.append(tier)
                log.warning("%s", unreachable_message(tier, over, limit, least, self.cfg))
        return missed

    def _trainable(self, floor: Masks, memory: float) -> bool:
        """Whether the smallest model pruning reaches can take one training step in `memory`
        bytes under any plan of `training_plan` (momentum-free, one sample at a time at most)."""
        model = self.facts.trained_model(self.state, floor, self.method.compact_training)
        cfg = self.cfg
        return fit_training(model, self.input_shape, cfg.batch_size, cfg.momentum, memory).fits

    def sample(self, rnd: int) -> list[int]:
        """The clients of round `rnd`, in client order (the same for the same seed): `fraction`
        of those not held out (held-out clients train nothing; they only deploy)."""
        pool = [c for c in range(self.cfg.clients) if c not in self.fleet.heldout]
        chosen = self.rng.choice(len(pool), size=self.cfg.per_round(), replace=False)
        return sorted(pool[i] for i in chosen)

    def orders(self, rnd: int, chosen: list[int]) -> dict[int, Orders]:
        """What each chosen client gets: the global model under the method's mask for it, and
        the method's orders."""
        m = self.method
        self.state, self.global_masks = m.before_round(rnd, self.state, self.global_masks)
        masks = {c: m.masks_for(c, rnd, self.state, self.global_masks) for c in chosen}
        core = m.core()
        ram = {c: self.fleet.clients[c].budget.max_memory for c in chosen}
        return {
            c: replace(m.orders(c, rnd, self.state, masks[c], core), memory=ram[c]) for c in chosen
        }

    def expected(self, rnd: int, cid: int, orders: Orders) -> Expected:
        """What a reply to `orders` must look like (checked before it touches anything)."""
        return Expected(
            self.state,
            orders.masks,
            self.train_sizes[cid],
            orders.policy,
            self.method.importance_layout(rnd),
            self.method.may_move,
        )

    def settle(
        self,
        rnd: int,
        orders: dict[int, Orders],
        accepted: dict[int, Reply],
        lost: Drops,
        download: dict[int, int],
    ) -> RoundOutcome:
        """Take in the round's accepted replies: their simulated device cost, what the method
        learns from them, the merge (with at least `min_clients`), then evaluate."""
        self.failed.update(lost)
        if lost:
            self.dropped[str(rnd)] = drop_entries(lost)
        seconds, joules = 0.0, 0.0
        training = {c: self.training(c, r, orders[c]) for c, r in accepted.items()}
        for cid, reply in accepted.items():
            core = orders[cid].core if training[cid].plan.core else {}
            secs, jls = self.simulated(cid, reply, download[cid], core)
            self.method.observe(cid, reply, secs)
            seconds, joules = max(seconds, secs), joules + jls
        updated = len(accepted) >= self.cfg.min_clients
        if updated:
            self._merge(rnd, accepted)
        else:
            log.warning(
                "round %d: %d accepted replies, fewer than min_clients=%d: the global model, "
                "masks and policy stay as they were",
                rnd,
                len(accepted),
                self.cfg.min_clients,
            )
        self.done = rnd
        loss, acc = self.evaluate() if self._evaluates(rnd) else (float("nan"),) * 2
        deployed = self.global_model()
        return RoundOutcome(
            rnd, list(orders), accepted, lost, updated, download, seconds, joules, loss, acc,
            self.facts.cost(deployed), self.facts.sparsity(deployed), training,
            {c: self.fleet.clients[c].tier for c in training},
            {c: self.fleet.clients[c].budget for c in training},
        )  # fmt: skip

    def training(self, cid: int, reply: Reply, orders: Orders) -> TrainingFootprint:
        """What the client's round asked of its device (`Fleet.training`), the core counted
        when the client's rule trains it (`federation/client.core_within`)."""
        core = core_within(orders.core, reply.masks) is not None
        compact = self.method.compact_training
        return self.fleet.training(cid, reply.state, reply.masks, compact, core)

    def _merge(self, rnd: int, accepted: dict[int, Reply]) -> None:
        for cid, reply in accepted.items():
            if self.method.keeps_own_masks:
                self.fleet.clients[cid].masks = reply.masks or None
            self.fleet.clients[cid].seen_rounds.append(rnd)
        self.state, self.global_masks = self.method.merge(rnd, self.state, accepted)

    def _evaluates(self, rnd: int) -> bool:
        return rnd % self.cfg.eval_every == 0 or rnd == self.cfg.rounds

    def evaluate(self, state: State | None = None) -> tuple[float, float]:
        """Loss and accuracy on the global test set of `state` (default: the global model
        under the global mask)."""
        set_state(self.model, self.global_model() if state is None else state)
        return evaluate(self.model, *self.test)

    def global_model(self) -> State:
        """The global model as deployed: under the global mask."""
        return apply_masks(self.state, self.global_masks)

    def simulated(self, cid: int, reply: Reply, download: int, core: Masks) -> tuple[float, float]:
        """Device-simulated (seconds, joules) of this client's round on its tier, every record it
        was sent counted in its download. The reply's state is already zero where its mask
        prunes, so its compute is the pruned model's, plus the core's forward and backward pass
        when the client trained it too (a core smaller than its own model), plus the forward pass
        that refreshed its BatchNorm statistics."""
        own = self.facts.cost(reply.state)
        flops = own.effective_flops
        if core:
            # the client's rule (federation/client.core_within): it trains the core within its
            # own mask unless that is its whole model, i.e. unless it keeps as many weights
            sub = self.facts.cost(apply_masks(reply.state, core))
            if sub.nonzero_params < own.nonzero_params:
                flops += sub.effective_flops
        samples = int(reply.metrics["num-examples"]) * int(reply.metrics.get("epochs", 1))
        refresh = own.effective_flops * int(reply.metrics.get("bn-refresh-samples", 0))
        profile = TIERS[self.fleet.clients[cid].tier]
        return simulated_round(
            profile, training_flops(flops, samples) + refresh, reply.upload_bytes, download
        )

    # ------------------------------------------------------------------------- deployment

    def deploy_orders(self) -> dict[int, Orders]:
        """Every client (held out or never selected too) prunes the final global model to its
        final budget by the method's rule."""
        m = self.method
        masks = {c: m.deploy_masks(c, self.state, self.global_masks) for c in self.everyone}
        return {c: m.deploy_orders(c, self.state, masks[c]) for c in self.everyone}

    @property
    def everyone(self) -> list[int]:
        return list(range(self.cfg.clients))

    def deployed(self, answers: dict[int, Deployment], lost: Drops) -> list[dict[str, Any]]:
        """Per-client figures of the deployed models. `answers`: each answering client's mask,
        local test accuracy and the BatchNorm statistics it recomputed (the global test set
        scores the model as the client runs it); a client that did not answer keeps the mask
        the server knows and no local accuracy."""
        if lost:
            self.dropped["deploy"] = drop_entries(lost)
        per_client = []
        accuracy: dict[bytes, float] = {}  # clients that deploy the same model share its figure
        footprint: dict[bytes, Footprint] = {}
        for cid in self.everyone:
            answer = answers.get(cid, Deployment({}, float("nan")))
            rec = self.fleet.clients[cid]
            rec.masks = answer.masks or rec.masks
            deploy_masks = self.fleet.deploy_masks(cid, self.global_masks)
            key = masks_key(deploy_masks) + state_key(answer.statistics)
            deployed = apply_masks(self.state, deploy_masks) | answer.statistics
            if key not in accuracy:
                accuracy[key] = self.evaluate(deployed)[1]
                footprint[key] = self.facts.footprint(self.state, deploy_masks)
            entry = self.fleet.report(cid, deployed, footprint[key])
            entry["accuracy_global_test"] = accuracy[key]
            entry["accuracy_local_test"] = answer.accuracy
            per_client.append(entry)
        return per_client

    def measure_latency(self, per_client: list[dict[str, Any]]) -> float:
        """Time every client's deployed model as a device runs it (compact when structured)
        beside the dense model; add `latency_ms`, `latency_speedup` and `latency_within_noise`
        to each entry and return the dense model's milliseconds (NaN everywhere when
        `latency_runs` is 0)."""
        if self.cfg.latency_runs == 0:
            for entry in per_client:
                entry["latency_ms"] = entry["latency_speedup"] = float("nan")
                entry["latency_within_noise"] = None
            return float("nan")
        masks = {c: self.fleet.deploy_masks(c, self.global_masks) for c in self.everyone}
        dense, ms = deployed_latency(
            self.model, self.state, masks, self.input_shape, self.cfg.structured,
            self.cfg.latency_runs,
        )  # fmt: skip
        for entry in per_client:
            entry.update(latency_fields(dense, ms[entry["client"]]))
        return dense.median

    def snapshot(
        self,
        rows: list[dict[str, Any]],
        rates: list[dict[str, Any]],
        elapsed: float,
        finished: bool = False,
    ) -> RunState:
        """Everything a stopped run needs to go on after round `done` (checkpoint.py), with the
        results rows so far and the wall seconds spent over every session."""
        clients = self.fleet.clients
        return RunState(
            round=self.done,
            config=self.cfg.to_dict(),
            state=self.state,
            global_masks=self.global_masks,
            client_masks={c.cid: c.masks for c in clients if c.masks is not None},
            seen_rounds={c.cid: c.seen_rounds for c in clients if c.seen_rounds},
            method=self.method.snapshot(),
            rng_state=dict(self.rng.bit_generator.state),
            rows=rows,
            rates=rates,
            dropped=self.dropped,
            failed=sorted(self.failed),
            elapsed=elapsed,
            finished=finished,
        )


def unreachable_message(
    tier: str, over: list[str], limit: Budget, least: Footprint, cfg: Config
) -> str:
    """Why a tier's budget is out of the model's reach, and the ways out."""
    return (
        f"the {tier} budget ({limit.max_params:.0f} params, {limit.max_flops:.0f} FLOPs, "
        f"{limit.max_memory:.0f} memory bytes) is out of this model's reach on "
        f"{', '.join(over)}: with every pruned layer at {MAX_RATE:.0%} it keeps "
        f"{least.params:.0f} params, {least.flops} FLOPs and {least.memory_bytes} memory bytes "
        f"(weights plus peak activations at batch 1; training holds its gradients and the "
        f"activations of a step too), mostly in what pruning leaves whole "
        f"(prune_skip = {cfg.prune_skip!r}; activations). Prune those layers too "
        '(prune_skip = ""), use a smaller model or input, or leave the tier out (device_mix)'
    )


def state_key(state: State) -> bytes:
    """A digest of arrays (e.g. BatchNorm statistics): equal digests, equal arrays."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        digest.update(name.encode() + b"\0" + np.ascontiguousarray(state[name]).tobytes())
    return digest.digest()


def masks_key(masks: Masks) -> bytes:
    """A digest of a mask set: equal digests, equal masks (so equal deployed models)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(masks):
        digest.update(name.encode() + b"\0" + np.packbits(masks[name]).tobytes())
    return digest.digest()
