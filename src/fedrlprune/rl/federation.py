"""The pruning policy on the server: one universal Q-network, one per client, or one trained
on a single client (the last two are ablations, `rl_policy` = "local" or "central").

Q-networks are averaged on their own path, unweighted: every client's MDP counts the same,
whatever its sample count, and the model's sparse rule has no meaning for a Q-network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrlprune.rl.agent import average_weights
from fedrlprune.state import State

POLICIES = ("federated", "local", "central")


class PolicyStore:
    """What each client gets as its policy, and how trained policies come back together.

    - ``federated``: every client trains the universal policy; the server averages them.
    - ``local``: each client keeps the agent it trained (from the initial one); nothing is
      shared, so a client that never trained uses the untrained initial policy.
    - ``central``: only client ``trainer`` trains the agent; every client uses that agent as it
      is, the ablation of a single-agent pruner that is not federated.
    """

    def __init__(self, initial: State, policy: str = "federated", trainer: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown rl_policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.trainer = trainer
        self.universal = initial  # the shared policy (stays the initial one when `local`)
        self.own: dict[int, State] = {}

    @property
    def federated(self) -> bool:
        return self.policy == "federated"

    def for_client(self, cid: int) -> State:
        """The universal policy, or (`local`) the client's own, from the initial one."""
        return self.own.get(cid, self.universal) if self.policy == "local" else self.universal

    def update(self, trained: dict[int, State]) -> None:
        """Fold in this round's trained policies, in client order (same bits every run)."""
        if not trained:
            return
        if self.policy == "federated":
            self.universal = average_weights([trained[c] for c in sorted(trained)])
        elif self.policy == "central":
            if self.trainer in trained:
                self.universal = trained[self.trainer]
        else:
            self.own.update(trained)


def save_policy(path: Path, weights: State) -> None:
    """The universal policy as named arrays (load with np.load(..., allow_pickle=False))."""
    np.savez(path, **weights)  # type: ignore[arg-type]
