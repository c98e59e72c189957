"""Cost accounting: FLOPs against a hand count, layer discovery, and sparsity-aware cost."""

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning import (
    classifier_name,
    count_nonzero,
    layer_flops,
    model_cost,
    prunable_layers,
    total_flops,
)

MNIST = (1, 28, 28)


def conv(c_out: int, h_out: int, w_out: int, c_in: int, k: int) -> int:
    """FlopCounterMode convention: 2 FLOPs per multiply-add, bias ignored."""
    return 2 * c_out * h_out * w_out * c_in * k * k


def linear(n_in: int, n_out: int) -> int:
    """2 FLOPs per multiply-add (addmm), bias add ignored."""
    return 2 * n_in * n_out


def test_lenet5_flops_match_hand_count() -> None:
    model = build_model("lenet5", MNIST, 10)
    # conv1 pads 2: 28x28 out; pool -> 14x14; conv2 (no pad) -> 10x10; pool -> 5x5; 16*5*5 = 400.
    expected = {
        "conv1": conv(6, 28, 28, 1, 5),  # 235,200
        "conv2": conv(16, 10, 10, 6, 5),  # 480,000
        "fc1": linear(400, 120),  # 96,000
        "fc2": linear(120, 84),  # 20,160
        "fc3": linear(84, 10),  # 1,680
    }
    assert layer_flops(model, MNIST) == expected
    # ReLU, max pooling and bias adds count 0, so the total is exactly the layers' sum.
    assert total_flops(model, MNIST) == sum(expected.values()) == 833_040


def test_flop_count_restores_mode_and_leaves_no_hooks() -> None:
    model = build_model("lenet5", MNIST, 10)
    model.train()
    layer_flops(model, MNIST)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    model.eval()
    total_flops(model, MNIST)
    assert not model.training


def test_wrong_input_shape_is_config_error() -> None:
    model = build_model("lenet5", MNIST, 10)
    with pytest.raises(ConfigError, match="per-sample input shape"):
        layer_flops(model, (3, 28, 28))


def test_prunable_layers_on_user_module() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv1d(1, 1, 1), nn.Flatten(), nn.Linear(4, 2)
    )
    assert list(prunable_layers(model)) == ["0", "2", "4"]
    assert classifier_name(model) == "4"


def test_flops_on_user_module() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    assert layer_flops(model, (1, 8, 8)) == {"0": conv(4, 6, 6, 1, 3), "3": linear(144, 2)}


def test_prunable_layers_finds_convs_inside_resnet_blocks() -> None:
    model = build_model("resnet18", (3, 32, 32), 10)
    names = list(prunable_layers(model))
    # stem + 8 blocks x 2 convs + 3 projection shortcuts + fc
    assert len(names) == 1 + 16 + 3 + 1
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert "layer2.0.shortcut.0" in names
    assert names[-1] == classifier_name(model) == "fc"


class HeadFirstNiN(nn.Module):
    """NiN-style: the logits come from a 1x1 conv and global pooling, the head defined first."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 10, 1)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).mean((2, 3))


def test_classifier_name_finds_a_conv_head() -> None:
    nin = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    assert classifier_name(nin) == classifier_name(nin, MNIST) == "2"
    # The forward pass, not the definition order, says which layer makes the logits.
    assert classifier_name(HeadFirstNiN(), MNIST) == "head"
    assert classifier_name(HeadFirstNiN()) == "features.2"
    # Without a shape a linear layer wins over a conv defined after it.
    assert classifier_name(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1))) == "0"


def test_classifier_name_needs_a_conv_or_linear() -> None:
    with pytest.raises(ConfigError, match=r"no conv or linear layer.*end the model with"):
        classifier_name(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)))


def test_model_cost_with_half_a_layer_zeroed() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", MNIST, 10)
    flops = layer_flops(model, MNIST)
    total = total_flops(model, MNIST)
    dense_params = sum(p.numel() for p in model.parameters())
    weight = model.conv2.weight
    with torch.no_grad():
        weight.view(-1)[: weight.numel() // 2] = 0.0

    cost = model_cost(model, MNIST)

    assert cost.layer_density["conv2"] == 0.5
    assert all(d == 1.0 for name, d in cost.layer_density.items() if name != "conv2")
    assert cost.dense_params == dense_params
    assert cost.nonzero_params == dense_params - weight.numel() // 2
    assert cost.dense_flops == total
    assert cost.effective_flops == total - flops["conv2"] // 2
    assert cost.param_reduction > 1.0
    assert cost.flops_reduction > 1.0
    # Precomputed counts give the same answer without another counted pass.
    assert model_cost(model, MNIST, flops=flops, total=total) == cost


@pytest.mark.parametrize("name", ["lenet5", "cnn", "mlp"])
def test_fresh_dense_model_has_no_reduction(name: str) -> None:
    cost = model_cost(build_model(name, MNIST, 10), MNIST)
    assert cost.param_reduction == 1.0
    assert cost.flops_reduction == 1.0
    assert cost.effective_flops == cost.dense_flops


def test_zero_initialised_batchnorm_bias_counts_as_zero() -> None:
    # BatchNorm biases start at 0, so a fresh ResNet already stores fewer non-zeros than params;
    # compute is unaffected because only conv/linear weights scale FLOPs.
    model = build_model("resnet18", (3, 32, 32), 10)
    cost = model_cost(model, (3, 32, 32))
    bn_biases = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert cost.nonzero_params == cost.dense_params - bn_biases
    assert cost.param_reduction >= 1.0
    assert cost.flops_reduction == 1.0


def test_count_nonzero_mixes_numpy_and_torch() -> None:
    state = {"a": np.array([[0.0, 1.0], [2.0, 0.0]]), "b": torch.tensor([0.0, 0.0, 3.0])}
    assert count_nonzero(state) == (7, 3)
    assert count_nonzero({}) == (0, 0)


def test_chained_cost_counts_the_compact_model_of_a_structured_mask() -> None:
    from fedrlprune.models import build_model
    from fedrlprune.pruning.compact import compact_model
    from fedrlprune.pruning.masks import apply_masks, magnitude_masks, mask_model
    from fedrlprune.pruning.metrics import chained_cost

    torch.manual_seed(0)
    for name, shape in (("mlp", (64,)), ("cnn", (1, 28, 28)), ("lenet5", (1, 28, 28))):
        model = build_model(name, shape, 10)
        state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        layers = list(prunable_layers(model))[:-1]  # all but the head
        masks = magnitude_masks(state, dict.fromkeys(layers, 0.75), "structured")
        mask_model(model, masks)
        params = {k: v.detach().numpy() for k, v in model.named_parameters()}
        flops, total = layer_flops(model, shape), total_flops(model, shape)
        cost = chained_cost(apply_masks(params, masks), flops, total)
        compact = compact_model(model, masks, shape)
        assert cost.nonzero_params == sum(p.numel() for p in compact.parameters()), name
        assert cost.effective_flops == pytest.approx(total_flops(compact, shape), rel=1e-3), name
