"""fedrlprune: distributed model pruning driven by federated reinforcement learning."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "resume_experiment", "run_experiment"]


def __getattr__(name: str) -> Any:
    """The API on first use: `fedrlprune keys` need not load Flower."""
    if name == "run_experiment":
        from fedrlprune.experiments.runner import run_experiment

        return run_experiment
    if name == "resume_experiment":
        from fedrlprune.experiments.runner import resume_experiment

        return resume_experiment
    if name == "Config":
        from fedrlprune.config import Config

        return Config
    raise AttributeError(f"module 'fedrlprune' has no attribute {name!r}")
