"""`fedrlprune bench`: methods side by side on named suites; a table, plots and a front check."""

from fedrlprune.bench.suites import METHODS, SUITES

__all__ = ["METHODS", "SUITES"]
