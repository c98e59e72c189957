"""Models by name: the registry and the reference architectures."""

from fedrlprune.models.zoo import MODELS, ModelFactory, build_model, register_model

__all__ = ["MODELS", "ModelFactory", "build_model", "register_model"]
