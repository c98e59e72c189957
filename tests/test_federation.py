"""Federating the pruning policy: the server's average is the mean of the clients' Q-networks."""

import numpy as np
import pytest

from fedrlprune.rl.env import OBS_DIM
from fedrlprune.rl.federation import PolicyStore
from fedrlprune.rl.prune import new_agent


def test_federated_average_of_two_q_networks_is_the_mean_of_their_weights() -> None:
    a, b = new_agent(1).get_weights(), new_agent(2).get_weights()
    store = PolicyStore(new_agent(0).get_weights(), "federated")
    store.update({3: b, 1: a})
    for name in a:
        np.testing.assert_allclose(store.universal[name], (a[name] + b[name]) / 2, rtol=1e-6)
    assert all(
        np.array_equal(store.for_client(c)[n], store.universal[n]) for c in (0, 5) for n in a
    )
    loaded = new_agent(9)
    loaded.set_weights(store.universal)
    for name, value in loaded.get_weights().items():
        np.testing.assert_array_equal(value, store.universal[name])


def test_local_agents_keep_their_own_policy() -> None:
    initial = new_agent(0).get_weights()
    store = PolicyStore(initial, "local")
    trained = new_agent(1).get_weights()
    store.update({2: trained})
    name = next(iter(initial))
    assert np.array_equal(store.for_client(2)[name], trained[name])
    assert np.array_equal(store.for_client(0)[name], initial[name])  # never trained: initial
    assert np.array_equal(store.universal[name], initial[name])


def test_no_trained_policy_changes_nothing() -> None:
    initial = new_agent(0).get_weights()
    store = PolicyStore(initial, "federated")
    store.update({})
    assert store.universal is initial


@pytest.mark.parametrize("policy", ["federated", "local", "central"])
def test_round_trip_through_arrays_is_exact(policy: str) -> None:
    agent = new_agent(4)
    store = PolicyStore(agent.get_weights(), policy)
    copy = new_agent(5)
    copy.set_weights(store.for_client(0))
    obs = np.random.default_rng(0).random((20, OBS_DIM)).astype(np.float32)
    assert [agent.greedy(o) for o in obs] == [copy.greedy(o) for o in obs]


def test_central_policy_is_the_trainers_alone_and_shared_by_everyone() -> None:
    initial = new_agent(0).get_weights()
    store = PolicyStore(initial, "central", trainer=3)
    trainer, other = new_agent(1).get_weights(), new_agent(2).get_weights()
    name = next(iter(initial))
    store.update({1: other})  # a reply from another client changes nothing
    assert np.array_equal(store.universal[name], initial[name])
    store.update({1: other, 3: trainer})
    for cid in (0, 1, 3, 7):
        assert np.array_equal(store.for_client(cid)[name], trainer[name])


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="rl_policy"):
        PolicyStore(new_agent(0).get_weights(), "shared")
