"""Model zoo: the networks the FL-pruning literature reports on, built by name from a config.

Every factory takes ``(input_shape, num_classes)`` with ``input_shape`` per sample (no batch
dimension). Flatten sizes come from a dummy forward pass so one definition serves every dataset,
and the last ``nn.Linear`` of every model is its classifier head.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedrlprune.errors import ConfigError

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]

MODELS: dict[str, ModelFactory] = {}
# What config.toml records for a model given from Python (run_experiment(model_fn=...)).
USER_MODEL = "user"


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Add a factory to ``MODELS`` under ``name`` so configs can refer to it."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ConfigError(
                f"model name {name!r} is already registered; pick another name for the new model"
            )
        MODELS[name] = factory
        return factory

    return decorate


def _fits(name: str, input_shape: tuple[int, ...]) -> bool:
    """Whether model ``name`` accepts ``input_shape``; built on the meta device, so nearly free."""
    try:
        with torch.device("meta"):
            MODELS[name](input_shape, 2)
    except (ConfigError, RuntimeError, ValueError):
        return False
    return True


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a registered model, turning unknown names and unusable shapes into ConfigErrors."""
    if name == USER_MODEL:
        raise ConfigError(
            f"model {USER_MODEL!r} is a model given from Python, which no registry holds; pass "
            "it again as model_fn= (resume_experiment, export_results), or set the model name "
            f"to one of: {', '.join(sorted(MODELS))}"
        )
    if name not in MODELS:
        raise ConfigError(
            f"unknown model {name!r}; set the model name to one of: {', '.join(sorted(MODELS))}"
        )
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}; fix the dataset")
    shape = tuple(int(d) for d in input_shape)
    try:
        return MODELS[name](shape, num_classes)
    except ConfigError as err:
        fitting = [other for other in sorted(MODELS) if other != name and _fits(other, shape)]
        hint = ", ".join(fitting) if fitting else "none of the registered models"
        raise ConfigError(
            f"{err}; models that take input shape {shape}: {hint}. "
            "Choose one of those or resize the input"
        ) from err


def _image_shape(model: str, input_shape: tuple[int, ...], min_hw: int) -> tuple[int, int, int]:
    """Check a conv model's input is (C, H, W) with H, W >= ``min_hw``."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_hw or input_shape[0] < 1:
        raise ConfigError(
            f"{model} needs image input (C, H, W) with H, W >= {min_hw}, got {input_shape}"
        )
    channels, height, width = input_shape
    return channels, height, width


def _flat_size(
    model: nn.Module, features: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]
) -> int:
    """Features per sample after ``features``; eval-mode pass so BN running stats stay untouched."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = features(torch.zeros(1, *input_shape))
    model.train(was_training)
    return out[0].numel()


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, as used in FL pruning papers.

    ``conv1`` pads by 2 so 28x28 behaves like the classic 32x32; ``conv2`` pads by 2 only in a
    dimension too small for a valid 5x5 window (e.g. 8x8 digits), leaving the classic net as is.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _image_shape("lenet5", input_shape, min_hw=4)
        pad2 = tuple(0 if size // 2 >= 5 else 2 for size in (height, width))
        self.conv1 = nn.Conv2d(channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=pad2)
        self.fc1 = nn.Linear(_flat_size(self, self._features, input_shape), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class FedAvgCNN(nn.Module):
    """The CNN of McMahan et al. 2017 (FedAvg); 1,663,370 parameters on 1x28x28, 10 classes."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = _image_shape("cnn", input_shape, min_hw=4)
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(_flat_size(self, self._features, input_shape), 512)
        self.fc2 = nn.Linear(512, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self._features(x).flatten(1))))


class MLP(nn.Module):
    """The FedAvg "2NN": two hidden layers of 200 ReLU units on the flattened input."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        in_features = int(torch.Size(input_shape).numel())
        if not input_shape or in_features < 1:
            raise ConfigError(f"mlp needs a non-empty input shape, got {input_shape}")
        self.fc1 = nn.Linear(in_features, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """CIFAR VGG-11 with BatchNorm and a single Linear head (512 -> classes on 32x32 input)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = _image_shape("vgg11", input_shape, min_hw=32)
        layers: list[nn.Module] = []
        for item in VGG11_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = int(item)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(_flat_size(self, self.features, input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, no stem max pool, [2, 2, 2, 2] basic blocks, global avg pool."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = _image_shape("resnet18", input_shape, min_hw=1)
        self.conv1 = nn.Conv2d(channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks = BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


register_model("lenet5")(LeNet5)
register_model("cnn")(FedAvgCNN)
register_model("mlp")(MLP)
register_model("vgg11")(VGG11)
register_model("resnet18")(ResNet18)
