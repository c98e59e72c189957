"""What the server and a client tell each other in a round, as typed data (no Flower).

`Orders` go down with the global model: one dataclass with optional parts, each part used by the
method that names it. `Reply` comes back once `fl/validation.py` has checked it against
`Expected`. `fl/protocol.py` packs and unpacks both: the only place that knows their wire form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedrlprune.state import Masks, State


@dataclass(frozen=True)
class RLOrders:
    """`fedrlprune`: what a client needs to run its pruning MDP at this step."""

    budget_flops: float  # the client's budget (the same at every pruning step)
    budget_params: float
    flops_share: float  # the tier's final budget as shares of the dense model
    params_share: float
    progress: float  # pruning steps done over all steps
    eps_start: float  # exploration over this step's episodes
    eps_end: float
    learn: bool  # False: use the policy as it is (held out, deployment, or `central`)


@dataclass(frozen=True)
class Orders:
    """What the server tells one client for one round (`deploy`: the end-of-run deployment)."""

    round: int
    masks: Masks  # the global model travels under these
    deploy: bool = False
    core: Masks = field(default_factory=dict)  # `fedrlprune`: train this sub-network too
    policy: State | None = None  # `fedrlprune`: the Q-network, with `rl`
    rl: RLOrders | None = None
    prune_rate: float = 0.0  # `magnitude`: layer sparsity to prune to before training
    importance: bool = False  # `prunefl`: send back the summed squared gradients
    readjust: float = 0.0  # `feddst`: share of kept weights to prune and regrow after training
    learn: bool = False  # `lotteryfl`: prune further once validation accuracy allows
    loss_delta: bool = False  # `fedmp`: report the training loss before and after
    budget_flops: float = 0.0  # `uniform`, `lamp`: the budget to prune to (0: no pruning)
    budget_params: float = 0.0
    memory: float = 0.0  # bytes of RAM the client trains within (`training_plan`; 0: no limit)


@dataclass(frozen=True)
class Reply:
    """A client's checked answer to a training round."""

    state: State
    masks: Masks
    metrics: dict[str, Any]
    policy: State | None
    upload_bytes: int
    importance: State | None = None  # `prunefl`: accumulated squared gradients per weight


@dataclass(frozen=True)
class Deployment:
    """What a client reports of the model it deployed."""

    masks: Masks
    accuracy: float  # on its local test split
    statistics: State = field(default_factory=dict)  # BatchNorm statistics it recomputed


@dataclass(frozen=True)
class Expected:
    """What the server knows a reply of this client must look like."""

    reference: State  # the global model's layout
    sent_masks: Masks  # the mask the client was sent; its reply may prune more, never less
    examples: int  # training samples the client's partition holds (from the handshake)
    policy: State | None = None  # the Q-network's layout, when a policy may come back
    importance: State | None = None  # `prunefl`: layout of the squared gradients asked for
    may_move: bool = False  # masks may move (prune and regrow) at constant density
