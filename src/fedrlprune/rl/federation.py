"""The pruning policy on the server: one universal Q-network, or one per client (the ablation).

Q-networks are averaged on their own path, unweighted: every client's MDP counts the same,
whatever its sample count, and the model's sparse rule has no meaning for a Q-network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrlprune.rl.agent import average_weights
from fedrlprune.state import State


class PolicyStore:
    """What each client gets as its policy, and how trained policies come back together."""

    def __init__(self, initial: State, federated: bool) -> None:
        self.federated = federated
        self.universal = initial  # stays the initial policy when not federated
        self.own: dict[int, State] = {}

    def for_client(self, cid: int) -> State:
        """The universal policy, or (not federated) the client's own, from the initial one."""
        return self.universal if self.federated else self.own.get(cid, self.universal)

    def update(self, trained: dict[int, State]) -> None:
        """Fold in this round's trained policies, in client order (same bits every run)."""
        if not trained:
            return
        if self.federated:
            self.universal = average_weights([trained[c] for c in sorted(trained)])
        else:
            self.own.update(trained)


def save_policy(path: Path, weights: State) -> None:
    """The universal policy as named arrays (load with np.load(..., allow_pickle=False))."""
    np.savez(path, **weights)  # type: ignore[arg-type]
