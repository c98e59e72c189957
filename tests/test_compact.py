"""Compaction: structured masks become a smaller dense model that computes the same outputs."""

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedrlprune.errors import FedRLPruneError
from fedrlprune.models import build_model
from fedrlprune.pruning.compact import (
    compact_model,
    export_onnx,
    kept_indices,
    onnx_latency,
    pruned_channels,
    torch_latency,
)
from fedrlprune.pruning.groups import channel_groups
from fedrlprune.pruning.masks import magnitude_masks, pruning_targets

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def structured_masks(model: nn.Module, channels: Mapping[str, Sequence[int]]) -> dict:
    """Masks dropping ``channels`` of each named module's weight and bias (BatchNorm included).

    The test models' weights are left as they are: compaction must mask them itself.
    """
    params = dict(model.named_parameters())
    masks = {}
    for layer, drop in channels.items():
        for kind in ("weight", "bias"):
            if f"{layer}.{kind}" in params:
                mask = np.ones(params[f"{layer}.{kind}"].shape, dtype=bool)
                mask[list(drop)] = False
                masks[f"{layer}.{kind}"] = mask
    return masks


def masked_outputs(model: nn.Module, masks: dict, x: torch.Tensor) -> torch.Tensor:
    """What the masked model computes: masked entries zeroed, eval mode."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, mask in masks.items():
        state[key][torch.from_numpy(~mask)] = 0
    reference = copy.deepcopy(model)
    reference.load_state_dict(state)
    with torch.no_grad():
        return reference.eval()(x)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise_batchnorm(model: nn.Module) -> None:
    """Trained-looking BatchNorm (non-trivial stats and affine), so shifts are not all zero."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def half(n: int) -> list[int]:
    return list(range(0, n, 2))


def check_same_outputs(model: nn.Module, masks: dict, shape: tuple[int, ...]) -> nn.Module:
    compact = compact_model(model, masks, shape)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = compact.eval()(x)
    torch.testing.assert_close(got, masked_outputs(model, masks, x), atol=1e-5, rtol=1e-4)
    return compact


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", MNIST, 10)


@pytest.fixture
def cnn_masks(cnn: nn.Module) -> dict:
    return structured_masks(cnn, {"conv1": half(32), "conv2": half(64), "fc1": half(512)})


def test_pruned_channels_reads_whole_masked_slices(cnn: nn.Module, cnn_masks: dict) -> None:
    cnn_masks["fc2.weight"] = np.ones((10, 512), dtype=bool)
    cnn_masks["fc2.weight"][4, :3] = False  # a partly masked row is not a pruned channel
    got = pruned_channels(cnn_masks, cnn)
    assert got == {"conv1": half(32), "conv2": half(64), "fc1": half(512), "fc2": []}


def test_fedavg_cnn_half_channels_shrinks_and_matches(cnn: nn.Module, cnn_masks: dict) -> None:
    compact = check_same_outputs(cnn, cnn_masks, MNIST)
    assert (compact.conv1.out_channels, compact.conv2.in_channels) == (16, 16)
    assert compact.conv2.out_channels == 32
    assert (compact.fc1.in_features, compact.fc1.out_features) == (32 * 7 * 7, 256)
    assert (compact.fc2.in_features, compact.fc2.out_features) == (256, 10)
    expected = (16 * 25 + 16) + (32 * 16 * 25 + 32) + (1568 * 256 + 256) + (256 * 10 + 10)
    assert n_params(compact) == expected == 417_482 < n_params(cnn) == 1_663_370


def test_original_model_is_untouched(cnn: nn.Module, cnn_masks: dict) -> None:
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    cnn.train()
    compact = compact_model(cnn, cnn_masks, MNIST)
    assert cnn.training and compact.training
    for key, value in cnn.state_dict().items():
        assert torch.equal(value, before[key])


def test_classifier_outputs_are_never_removed(cnn: nn.Module) -> None:
    masks = structured_masks(cnn, {"fc2": [3]})
    compact = check_same_outputs(cnn, masks, MNIST)
    assert compact.fc2.out_features == 10


def test_lenet5_shrinks_and_matches() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", MNIST, 10)
    masks = structured_masks(
        model, {"conv1": [0, 2, 4], "conv2": half(16), "fc1": half(120), "fc2": half(84)}
    )
    compact = check_same_outputs(model, masks, MNIST)
    assert [compact.conv1.out_channels, compact.conv2.out_channels] == [3, 8]
    assert [compact.fc1.out_features, compact.fc2.out_features, compact.fc3.in_features] == [
        60,
        42,
        42,
    ]


def test_vgg11_with_batchnorm_shrinks_and_matches() -> None:
    torch.manual_seed(0)
    model = build_model("vgg11", CIFAR, 10)
    randomise_batchnorm(model)
    # Conv and its BatchNorm pruned together, so the removed channels are exactly zero.
    masks = structured_masks(
        model, {"features.0": half(64), "features.1": half(64), "features.4": [1, 2, 3]}
    )
    masks |= structured_masks(model, {"features.5": [1, 2, 3]})
    compact = check_same_outputs(model, masks, CIFAR)
    assert compact.features[0].out_channels == 32 and compact.features[1].num_features == 32
    assert compact.features[4].in_channels == 32 and compact.features[4].out_channels == 125
    assert n_params(compact) < n_params(model)


def test_kept_batchnorm_shift_is_refused() -> None:
    torch.manual_seed(0)
    model = build_model("vgg11", CIFAR, 10)
    with torch.no_grad():
        model.features[1].bias.fill_(1.0)  # pruned channels leave BN as a constant 1 after ReLU
    masks = structured_masks(model, {"features.0": half(64)})
    with pytest.raises(FedRLPruneError, match="BatchNorm"):
        compact_model(model, masks, CIFAR)


def test_resnet18_inner_conv_shrinks_and_matches() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", CIFAR, 10)
    randomise_batchnorm(model)
    masks = structured_masks(model, {"layer2.0.conv1": half(128), "layer2.0.bn1": half(128)})
    compact = check_same_outputs(model, masks, CIFAR)
    assert compact.layer2[0].conv1.out_channels == 64 and compact.layer2[0].conv2.in_channels == 64
    assert n_params(compact) < n_params(model)


def test_resnet18_residual_channels_go_only_where_all_coupled_layers_pruned() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", CIFAR, 10)
    # Stem, layer1.0.conv2 and layer1.1.conv2 all write the same residual stream.
    coupled = {"conv1": [1, 2, 9], "layer1.0.conv2": [0, 1, 2], "layer1.1.conv2": [1, 2, 3]}
    masks = structured_masks(model, coupled)
    masks |= structured_masks(
        model, {"bn1": [1, 2], "layer1.0.bn2": [1, 2], "layer1.1.bn2": [1, 2]}
    )
    compact = check_same_outputs(model, masks, CIFAR)
    assert compact.conv1.out_channels == 62  # only channels 1 and 2 are pruned everywhere
    assert compact.layer1[0].conv2.out_channels == compact.layer1[1].conv2.out_channels == 62
    assert compact.layer2[0].shortcut[0].in_channels == 62


def test_kept_indices_place_every_compact_entry_in_the_dense_state(
    cnn: nn.Module, cnn_masks: dict
) -> None:
    compact = compact_model(cnn, cnn_masks, MNIST)
    index = kept_indices(cnn, cnn_masks, MNIST)
    dense = {k: v.numpy() for k, v in cnn.state_dict().items()}
    for key, value in compact.state_dict().items():
        expected = np.where(cnn_masks[key], dense[key], 0) if key in cnn_masks else dense[key]
        np.testing.assert_array_equal(value.numpy(), expected[np.ix_(*index[key])], err_msg=key)
    odd = list(range(1, 64, 2))  # the channels conv2 keeps, each 7x7 positions in fc1's input
    assert index["conv2.weight"][1].tolist() == odd[:16]
    assert index["fc1.weight"][1].tolist() == [c * 49 + p for c in odd for p in range(49)]


def test_every_channel_of_a_layer_is_refused(cnn: nn.Module) -> None:
    masks = structured_masks(cnn, {"conv2": range(64)})
    with pytest.raises(FedRLPruneError, match="every output channel of conv2"):
        compact_model(cnn, masks, MNIST)


def test_masked_weights_with_live_bias_are_refused(cnn: nn.Module, cnn_masks: dict) -> None:
    del cnn_masks["conv1.bias"]
    with torch.no_grad():
        cnn.conv1.bias.fill_(0.5)
    with pytest.raises(FedRLPruneError, match="non-zero bias"):
        compact_model(cnn, cnn_masks, MNIST)


@pytest.mark.parametrize("torchscript", ["works", "is gone"])
def test_onnx_matches_torch_at_any_batch(
    cnn: nn.Module,
    cnn_masks: dict,
    tmp_path: Path,
    torchscript: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if torchscript == "is gone":  # a torch without the deprecated exporter: torch.export writes it
        export = torch.onnx.export

        def dynamo_only(*args: object, dynamo: bool, **kwargs: object) -> object:
            if not dynamo:
                raise RuntimeError("the TorchScript exporter was removed")
            return export(*args, dynamo=dynamo, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(torch.onnx, "export", dynamo_only)
    compact = compact_model(cnn, cnn_masks, MNIST).eval()
    path = export_onnx(compact, MNIST, tmp_path / "cnn.onnx")
    assert path.is_file() and not list(tmp_path.glob("*.data"))  # one self-contained file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, *MNIST)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, compact(x).numpy(), atol=1e-4, rtol=1e-4)
    assert onnx_latency(path, MNIST, batch=2, runs=3, warmup=1) > 0


def test_torch_latency_restores_threads_and_mode(cnn: nn.Module) -> None:
    threads = torch.get_num_threads()
    cnn.train()
    assert torch_latency(cnn, MNIST, batch=2, runs=3, warmup=1) > 0
    assert torch.get_num_threads() == threads and cnn.training


class UserCNN(nn.Module):
    """A user's CNN: BatchNorm everywhere, a depthwise-separable block around a residual
    addition, and a BatchNorm1d hidden layer before the head."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16))
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32))
        self.hidden = nn.Sequential(nn.Linear(32, 24), nn.BatchNorm1d(24))
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.pw(F.relu(self.dw(x))) + x)
        x = F.relu(self.down(x)).mean((2, 3))
        return self.head(F.relu(self.hidden(x)))


def randomise_norms(model: nn.Module) -> None:
    """`randomise_batchnorm` for every BatchNorm (1d too): pruned channels must be exactly 0."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.5)


ANY_CNN = {
    "lenet5": MNIST,
    "cnn": MNIST,
    "mlp": MNIST,
    "vgg11": CIFAR,
    "resnet18": CIFAR,
    "user": (3, 16, 16),
}


@pytest.mark.parametrize("name", ANY_CNN)
def test_group_masks_compact_any_cnn_and_run_in_onnx(name: str, tmp_path: Path) -> None:
    shape = ANY_CNN[name]
    torch.manual_seed(0)
    model = UserCNN(shape[0], 10) if name == "user" else build_model(name, shape, 10)
    randomise_norms(model)
    targets = pruning_targets(model)
    groups = channel_groups(model, shape, targets)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    masks = magnitude_masks(state, dict.fromkeys(targets, 0.5), "structured", groups=groups)
    compact = check_same_outputs(model, masks, shape).eval()
    assert n_params(compact) < 0.5 * n_params(model)

    path = export_onnx(compact, shape, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, masked_outputs(model, masks, x).numpy(), atol=1e-4, rtol=1e-4)


class NiN(nn.Module):
    """Network-in-Network style: no linear layer; a 1x1 conv makes one map per class and global
    average pooling turns the maps into logits."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Conv2d(32, num_classes, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.head(self.features(x)))


def test_conv_head_keeps_its_classes_through_structured_pruning_and_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NiN(1, 10)
    randomise_norms(model)
    targets = pruning_targets(model, input_shape=MNIST)
    assert targets == ["features.0", "features.3", "features.7"]
    # Even named as a target the head has no group: nothing reads its channels.
    everything = channel_groups(model, MNIST, pruning_targets(model, skip=[]))
    assert all("head" not in group.layers for group in everything)
    groups = channel_groups(model, MNIST, targets)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    masks = magnitude_masks(state, dict.fromkeys(targets, 0.5), "structured", groups=groups)
    assert not any(key.startswith("head.") for key in masks)

    compact = check_same_outputs(model, masks, MNIST).eval()
    assert (compact.head.in_channels, compact.head.out_channels) == (16, 10)
    path = export_onnx(compact, MNIST, tmp_path / "nin.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, *MNIST, generator=torch.Generator().manual_seed(3))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (2, 10)
    np.testing.assert_allclose(got, masked_outputs(model, masks, x).numpy(), atol=1e-4, rtol=1e-4)
