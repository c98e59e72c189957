"""Model zoo: every model builds and runs on the shapes it claims, and refuses the rest clearly."""

import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import MODELS, build_model

# (model, input shape) pairs each model must accept.
ACCEPTED = [
    ("lenet5", (1, 28, 28)),
    ("lenet5", (3, 32, 32)),
    ("lenet5", (1, 8, 8)),
    ("cnn", (1, 28, 28)),
    ("cnn", (3, 32, 32)),
    ("cnn", (1, 8, 8)),
    ("mlp", (1, 28, 28)),
    ("mlp", (64,)),
    ("vgg11", (3, 32, 32)),
    ("resnet18", (3, 32, 32)),
    ("resnet18", (1, 8, 8)),
]


def test_every_registered_model_is_covered() -> None:
    assert {name for name, _ in ACCEPTED} == set(MODELS)


@pytest.mark.parametrize(("name", "shape"), ACCEPTED)
def test_forward_gives_batch_by_classes(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, num_classes=7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize(("name", "shape"), ACCEPTED)
def test_last_linear_is_the_head(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, num_classes=7)
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear.out_features == 7


def test_fedavg_cnn_parameter_count() -> None:
    model = build_model("cnn", (1, 28, 28), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 1_663_370


def test_lenet5_parameter_count_is_classic() -> None:
    model = build_model("lenet5", (1, 28, 28), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 61_706


def test_unknown_name_lists_models() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'") as info:
        build_model("nope", (1, 28, 28), 10)
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape", "fitting", "not_fitting"),
    [
        ("cnn", (64,), ["mlp"], ["lenet5", "resnet18", "vgg11"]),
        ("lenet5", (64,), ["mlp"], ["cnn", "resnet18", "vgg11"]),
        ("vgg11", (1, 28, 28), ["cnn", "lenet5", "mlp", "resnet18"], []),
        ("vgg11", (3, 16, 16), ["cnn", "lenet5", "mlp", "resnet18"], []),
    ],
)
def test_unusable_shape_names_models_that_fit(
    name: str, shape: tuple[int, ...], fitting: list[str], not_fitting: list[str]
) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        build_model(name, shape, 10)
    hint = str(info.value).split("models that take input shape")[1]
    for other in fitting:
        assert other in hint
    for other in not_fitting:
        assert other not in hint


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_weights(name: str) -> None:
    shape = (64,) if name == "mlp" else (3, 32, 32)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        states.append(build_model(name, shape, 10).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_construction_leaves_batchnorm_stats_untouched() -> None:
    model = build_model("vgg11", (3, 32, 32), 10)
    bn = model.features[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert int(bn.num_batches_tracked) == 0
    assert model.training
