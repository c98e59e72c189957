"""The Flower ClientApp: a thin adapter that moves records in and out of local work.

Each message carries the whole run config, so a client (simulated or a real SuperNode) needs
only its partition id to rebuild its own data split: `partition-id` in a real SuperNode's node
config; in simulation the message names it, so any simulated node serves any client. The
work itself is `federation/client.py`: `train_round` (the method prunes, the client trains,
the method finishes) and `deploy` (prune to the final budget, evaluate).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrlprune.config import Config
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.federation import client as local_work
from fedrlprune.federation.client import Update, client_data
from fedrlprune.fl import protocol
from fedrlprune.methods.base import ClientData
from fedrlprune.models import ModelFactory
from fedrlprune.training import get_state

# The clients a worker process served last, kept between messages. Flower's simulation sends
# the ClientApp with every message, so a cache inside it would start empty each time; this one
# lives as long as the worker. At most one round's clients (and one more) are kept, so a
# worker's memory does not grow with the number of clients in the run.
_CLIENTS: OrderedDict[tuple[str, Config, int], ClientData] = OrderedDict()


def make_client_app(
    model_fn: ModelFactory | None = None, data: ArrayDataset | None = None
) -> ClientApp:
    """A ClientApp for the config each message carries; a user model or dataset may replace the
    registry's and the named dataset (the Python API's way to bring your own)."""
    app = ClientApp()
    token = uuid.uuid4().hex  # names this app's model and data in the worker's cache

    def local(cfg: Config, context: Context, named: int | None = None) -> ClientData:
        cid = partition_id(context, cfg) if named is None else checked_partition(named, cfg)
        key = (token, cfg, cid)
        if key in _CLIENTS:
            _CLIENTS.move_to_end(key)
            return _CLIENTS[key]
        _CLIENTS[key] = client_data(cfg, cid, model_fn, data, token)
        while len(_CLIENTS) > cfg.per_round() + 1:
            _CLIENTS.popitem(last=False)
        return _CLIENTS[key]

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        cfg, _, named = protocol.config_of(msg.content)
        stats = local(cfg, context, named).stats
        return Message(RecordDict({protocol.METRICS: MetricRecord(stats)}), reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        cfg, extra, named = protocol.config_of(msg.content)
        data = local(cfg, context, named)
        orders, state = protocol.unpack_orders(msg.content, extra, get_state(data.model))
        update = local_work.train_round(cfg, data, state, orders.masks, orders)
        return Message(_content(update), reply_to=msg)

    @app.evaluate()
    def deploy(msg: Message, context: Context) -> Message:
        cfg, extra, named = protocol.config_of(msg.content)
        data = local(cfg, context, named)
        orders, state = protocol.unpack_orders(msg.content, extra, get_state(data.model))
        update = local_work.deploy(cfg, data, state, orders.masks, orders)
        return Message(_content(update), reply_to=msg)

    return app


def _content(update: Update) -> RecordDict:
    """A reply: the model under its mask, the metrics, and the policy and importance if any."""
    content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        protocol.ARRAYS: protocol.pack(update.state, update.masks),
        protocol.METRICS: MetricRecord(update.metrics),
    }
    if update.policy is not None:
        content[protocol.POLICY] = protocol.pack(update.policy, {})
    if update.importance is not None:
        content[protocol.IMPORTANCE] = protocol.pack(update.importance, {})
    return RecordDict(content)


def partition_id(context: Context, cfg: Config) -> int:
    """This node's client id, from its node config (`partition-id`), checked against the run."""
    node = context.node_config
    if "partition-id" not in node:
        raise FedRLPruneError(
            "this SuperNode has no `partition-id` in its node config; start it with "
            '--node-config "partition-id=K num-partitions=N" (K in 0..N-1)'
        )
    return checked_partition(int(node["partition-id"]), cfg)


def checked_partition(cid: int, cfg: Config) -> int:
    """`cid` if the run has such a client, else a clear error."""
    if not 0 <= cid < cfg.clients:
        raise FedRLPruneError(
            f"partition-id={cid} but the run has clients={cfg.clients}; "
            f"give each SuperNode a partition-id in 0..{cfg.clients - 1}"
        )
    return cid


# The ClientApp that `flwr run` loads (see [tool.flwr.app.components] in pyproject.toml).
app = make_client_app()
