"""fedrlprune: distributed model pruning driven by federated reinforcement learning."""

__version__ = "0.1.0"
