"""User-facing errors: each message names the problem and the fix, never a bare traceback."""


class FedRLPruneError(Exception):
    """Base class for mistakes a user can fix (config, data, input); the CLI prints these."""


class ConfigError(FedRLPruneError):
    """A configuration key, type or value that is not allowed."""


class DataError(FedRLPruneError):
    """A dataset that cannot be found, read or partitioned as asked."""


class PayloadError(FedRLPruneError):
    """A received payload does not fit the model: refused whole, never half-applied."""


class RunFailed(FedRLPruneError):
    """A run that cannot produce a result (no client trained): it stops and says why."""
