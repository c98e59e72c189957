"""`fedrlprune`: each client prunes with a DQN policy trained federatedly (the paper's method).

In a pruning round every selected client gets the universal policy (a Q-network) with the
global model, trains it on its own pruning MDP (`rl/env.py`: one rate per layer, inside its
device budget at this step of the schedule), prunes greedily at the policy's rates, trains its
pruned model and sends both back; the server averages the Q-networks (`rl/federation.py`) and
merges the models with the mask-vote rule. With `regrow`, a pruning round starts from the
global mask, so a weight pruned too early can come back. With `train_core`, every client also
trains the core, the weights every client keeps, as a model of its own (the sandwich rule),
so the smallest devices' models work alone. At deployment a client keeps the mask it was
trained under when that fits its final budget; otherwise it asks the policy once more.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrlprune.devices import TIERS, Budget
from fedrlprune.errors import FedRLPruneError
from fedrlprune.federation.messages import Orders, Reply, RLOrders
from fedrlprune.methods.base import ClientData, Pruned
from fedrlprune.methods.budgeted import BudgetedPruning
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.rl.env import layer_infos
from fedrlprune.rl.federation import PolicyStore
from fedrlprune.rl.prune import (
    RLSettings,
    client_features,
    initial_policy,
    policy_layout,
    reward_sample,
    rl_prune,
)
from fedrlprune.state import Masks, State

if TYPE_CHECKING:
    from fedrlprune.config import Config
    from fedrlprune.federation.fleet import Fleet


class FedRLPrune(BudgetedPruning):
    name = "fedrlprune"
    summary = "per-layer rates from a federated DQN policy, inside each device's budget"

    def __init__(self, cfg: Config, fleet: Fleet) -> None:
        super().__init__(cfg, fleet)
        initial = initial_policy(cfg.seed, cfg.rl_actions)
        self.policies = PolicyStore(initial, cfg.rl_policy, fleet.trainer)

    # --------------------------------------------------------------------------- server side
    # (regrowth, the core, the budgets and the deployment rule: `BudgetedPruning`)

    def pruning_orders(self, cid: int, orders: Orders, step: int) -> Orders:
        """`orders` with the policy and the MDP's settings; a policy asked at deployment (step
        0, when the mask misses the final budget) prunes as it is, without learning."""
        rl = self.rl_orders(cid, orders.round, step, learn=not orders.deploy)
        return replace(orders, policy=self.policies.for_client(cid), rl=rl)

    def rl_orders(self, cid: int, rnd: int, step: int, learn: bool) -> RLOrders:
        """What a client needs to run its pruning MDP at step `step` (final budget when 0)."""
        steps = len(self.fleet.prune_rounds)
        limit = self.fleet.pruning_budget(cid)
        profile = TIERS[self.fleet.clients[cid].tier]
        eps = np.linspace(self.cfg.rl_eps_start, self.cfg.rl_eps_end, steps + 1)
        if self.cfg.rl_policy == "central":
            trains = cid == self.fleet.trainer
        else:
            trains = cid in self.explorers(rnd)
        return RLOrders(
            budget_flops=limit.max_flops,
            budget_params=limit.max_params,
            flops_share=profile.flops_budget,
            params_share=profile.params_budget,
            progress=(step or steps) / steps,
            eps_start=float(eps[max(step, 1) - 1]),
            eps_end=float(eps[max(step, 1)]),
            learn=learn and cid not in self.fleet.heldout and trains,
        )

    def explorers(self, rnd: int) -> set[int]:
        """The clients that train the policy in round `rnd`: `rl_explorers` of those not held
        out, a seeded draw per round (all when 0). Scoring candidates costs more than a client's
        local epoch, so a few explorers a round keep the agent a small share of the clients'
        compute while the averaged policy still learns from every tier over the rounds."""
        pool = [c for c in range(self.cfg.clients) if c not in self.fleet.heldout]
        k = self.cfg.rl_explorers
        if k == 0 or k >= len(pool):
            return set(pool)
        rng = np.random.default_rng([self.cfg.seed, rnd, 0x5EED])
        return {int(c) for c in rng.choice(pool, size=k, replace=False)}

    def merge(self, rnd: int, state: State, replies: dict[int, Reply]) -> tuple[State, Masks]:
        self.policies.update({c: r.policy for c, r in replies.items() if r.policy is not None})
        return super().merge(rnd, state, replies)

    def snapshot(self) -> dict[str, np.ndarray]:
        arrays = {f"universal/{k}": v for k, v in self.policies.universal.items()}
        for cid, weights in self.policies.own.items():
            arrays |= {f"client{cid}/{k}": v for k, v in weights.items()}
        return arrays

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        universal: State = {}
        own: dict[int, State] = {}
        for key, value in arrays.items():
            who, name = key.split("/", 1)
            if who == "universal":
                universal[name] = value
            else:
                own.setdefault(int(who.removeprefix("client")), {})[name] = value
        for weights in (universal, *own.values()):
            check_policy(weights)
        self.policies.universal, self.policies.own = universal, own

    def artifacts(self) -> dict[str, State]:
        return {"policy.npz": self.policies.universal}

    # --------------------------------------------------------------------------- client side

    @classmethod
    def prune(
        cls, cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
    ) -> Pruned:
        """Train the policy on this client's MDP (unless told not to), prune at its rates."""
        if orders.policy is None or orders.rl is None:
            return Pruned(state, masks)
        if "layers" not in data.cache:
            data.cache["layers"] = layer_infos(data.model, data.input_shape, data.targets)
            data.cache["total_flops"] = total_flops(data.model, data.input_shape)
            data.cache["reward_sample"] = reward_sample(
                data.x_val, data.y_val, data.x_train, data.y_train, seed=int(data.stats["client"])
            )
        rl = orders.rl
        result = rl_prune(
            data.model,
            state,
            masks,
            data.cache["layers"],
            mode=cfg.mode,
            total_params=sum(p.numel() for p in data.model.parameters()),
            total_flops=data.cache["total_flops"],
            budget=Budget(rl.budget_flops, rl.budget_params),
            client=client_features(
                rl.flops_share,
                rl.params_share,
                len(data.y_train),
                float(data.stats["label_entropy"]),
                rl.progress,
            ),
            sample=data.cache["reward_sample"],
            policy=orders.policy,
            settings=cls._settings(cfg, rl, orders.round, int(data.stats["client"])),
            groups=data.groups(cfg.structured),
            cost=data.structured_cost() if cfg.structured else None,
        )
        metrics: dict[str, Any] = {f"rate/{layer}": r for layer, r in result.rates.items()}
        metrics |= {
            "rl-seconds": result.seconds,
            "rl-episodes": result.episodes,
            "rl-updates": result.updates,
            "rl-evaluations": result.evaluations,
            "rl-within-budget": int(result.within_budget),
        }
        if math.isfinite(result.val_accuracy):
            metrics["rl-val-accuracy"] = result.val_accuracy
        trained = result.policy if result.episodes else None
        return Pruned(apply_masks(state, result.masks), result.masks, metrics, trained)

    @staticmethod
    def _settings(cfg: Config, rl: RLOrders, rnd: int, cid: int) -> RLSettings:
        return RLSettings(
            episodes=cfg.rl_episodes,
            eps_start=rl.eps_start,
            eps_end=rl.eps_end,
            reward=cfg.rl_reward,
            cost_weight=cfg.rl_cost_weight,
            lr=cfg.rl_lr,
            learn=rl.learn,
            targets=cfg.rl_targets,
            actions=cfg.rl_actions,
            seed=cfg.seed * 7_919 + rnd * 101 + cid,
        )


def check_policy(weights: State) -> None:
    """A checkpoint's policy must fit today's Q-network (the observation grew with the state)."""
    layout = policy_layout()
    shapes = {k: np.shape(v) for k, v in weights.items()}
    if shapes != {k: np.shape(v) for k, v in layout.items()}:
        raise FedRLPruneError(
            f"the checkpoint's policy has arrays {shapes}, but this version's Q-network needs "
            f"{ {k: np.shape(v) for k, v in layout.items()} }: it was written by an older "
            "version; start the run again in a new folder"
        )
