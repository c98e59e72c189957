"""Synthetic(alpha, beta) of FedProx: generated from the seed, split by client as generated."""

from __future__ import annotations

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.data import load_dataset
from fedrlprune.data.federated import federate, global_test, named_dataset
from fedrlprune.data.synthetic import CLASSES, FEATURES, generate, synthetic_dataset
from fedrlprune.errors import DataError
from fedrlprune.federation.client import client_data

SMALL = {"dataset": "synthetic", "partition": "natural", "clients": 8, "model": "mlp",
         "data_fraction": 1.0}  # fmt: skip


def test_same_seed_same_data_and_another_seed_other_data() -> None:
    first, again = generate(6, 1.0, 1.0, 4), generate(6, 1.0, 1.0, 4)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other = generate(6, 1.0, 1.0, 5)
    assert [len(y) for _, y in first] != [len(y) for _, y in other]


def test_sample_counts_are_the_procedures_lognormal_plus_50() -> None:
    sizes = [len(y) for _, y in generate(30, 1.0, 1.0, 2)]
    expected = np.random.RandomState(2).lognormal(4, 2, 30).astype(int) + 50
    assert sizes == expected.tolist()
    assert min(sizes) >= 50 and max(sizes) > 5 * np.median(sizes)  # a heavy tail


def test_features_labels_and_shapes() -> None:
    ds = synthetic_dataset(8, 1.0, 1.0, 0)
    assert ds.input_shape == (FEATURES,) == (60,) and ds.num_classes == CLASSES == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for y in (ds.y_train, ds.y_test):
        assert y.min() >= 0 and y.max() < CLASSES
    assert len(np.unique(ds.y_train)) > 2  # not one class everywhere


def test_beta_changes_the_data_and_alpha_as_published_does_not() -> None:
    # u_k is one number added to every weight and bias of client k, so it shifts every class's
    # logit by the same amount and the argmax never sees it: the published procedure's alpha
    # changes no sample. Reproduced as published, so this fails if the generator departs.
    base = generate(5, 1.0, 1.0, 0)
    for other_alpha in (0.0, 5.0):
        for (x1, y1), (x2, y2) in zip(base, generate(5, other_alpha, 1.0, 0), strict=True):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    other_beta = generate(5, 1.0, 0.5, 0)
    assert all(not np.array_equal(a[0], b[0]) for a, b in zip(base, other_beta, strict=True))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(base, other_beta, strict=True))


def test_each_client_holds_exactly_its_own_generated_training_share() -> None:
    cfg = Config.from_dict(SMALL)
    fed = federate(cfg, named_dataset(cfg))
    generated = generate(8, 1.0, 1.0, 0)
    for split, (x, _) in zip(fed.clients, generated, strict=True):
        held = np.sort(np.concatenate([split.train, split.val, split.test]))
        assert len(held) == int(0.9 * len(x))  # the official 90/10 cut
        np.testing.assert_array_equal(fed.dataset.x_train[held], x[: len(held)].astype(np.float32))
        assert len(split.val) == int(0.1 * len(held)) and len(split.test) == int(0.1 * len(held))


def test_the_global_test_set_is_every_clients_held_out_share() -> None:
    cfg = Config.from_dict(SMALL)
    x, y = global_test(cfg)
    sizes = [len(y_k) for _, y_k in generate(8, 1.0, 1.0, 0)]
    assert len(y) == sum(n - int(0.9 * n) for n in sizes) and x.shape[1:] == (60,)


def test_a_client_gets_its_data_and_an_mlp_for_60_features() -> None:
    data = client_data(Config.from_dict(SMALL), 3)
    assert data.x_train.shape[1:] == (60,) and data.input_shape == (60,)
    assert data.model(data.x_train[:4]).shape == (4, 10)


def test_load_dataset_says_synthetic_is_generated_from_the_config() -> None:
    with pytest.raises(DataError, match="named_dataset"):
        load_dataset("synthetic")
