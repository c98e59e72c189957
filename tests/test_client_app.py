"""The ClientApp's view of a message: the orders and the core beside the model, decoded and
checked."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedrlprune.config import Config
from fedrlprune.errors import PayloadError
from fedrlprune.federation.messages import Orders, RLOrders
from fedrlprune.fl import protocol
from fedrlprune.rl.prune import policy_layout

REF = {"w": np.ones((2, 3), np.float32), "b": np.zeros(2, np.float32)}


def test_orders_round_trip_with_their_masks_core_and_policy() -> None:
    cfg = Config.from_dict({"clients": 3})
    masks = {"w": np.array([[1, 1, 0], [1, 1, 1]], bool)}
    core = {"w": np.array([[1, 0, 0], [0, 0, 1]], bool)}
    rl = RLOrders(1e5, 3e4, 0.2, 0.1, 0.5, 1.0, 0.5, True)
    sent = Orders(7, masks, core=core, policy=policy_layout(), rl=rl, prune_rate=0.3)
    content = protocol.pack_orders(cfg, sent, REF)
    got_cfg, extra, named = protocol.config_of(content)
    got, state = protocol.unpack_orders(content, extra, REF)
    assert got_cfg == cfg and named is None and got.rl == rl
    assert (got.round, got.prune_rate) == (7, 0.3)
    np.testing.assert_array_equal(got.masks["w"], masks["w"])
    np.testing.assert_array_equal(got.core["w"], core["w"])
    np.testing.assert_array_equal(state["w"], np.where(masks["w"], 1.0, 0.0))
    assert got.policy is not None and got.policy.keys() == policy_layout().keys()
    content = protocol.pack_orders(cfg, Orders(1, {}), REF)
    plain = protocol.unpack_orders(content, protocol.config_of(content)[1], REF)[0]
    assert plain.core == {} and plain.policy is None and plain.rl is None


def test_a_simulated_message_names_its_client_beside_the_orders() -> None:
    # in simulation any node serves any client: the client id travels, the orders stay whole
    content = protocol.pack_orders(Config(), Orders(4, {}, prune_rate=0.5), REF, partition=9)
    _, extra, named = protocol.config_of(content)
    orders, _ = protocol.unpack_orders(content, extra, REF)
    assert named == 9 and (orders.round, orders.prune_rate) == (4, 0.5)


def test_a_core_that_does_not_fit_the_model_is_refused() -> None:
    content = protocol.pack_orders(Config(), Orders(1, {}), REF)
    content[protocol.CORE] = ArrayRecord({"w@bitmask": Array(np.zeros(5, np.uint8))})
    with pytest.raises(PayloadError, match="w: bitmask has 5 bytes"):
        protocol.unpack_orders(content, protocol.config_of(content)[1], REF)
