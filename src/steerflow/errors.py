"""Exception types. Every error steerflow raises on bad input is a subclass of ``SteerflowError``.

They also subclass the built-in type a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for numerical failures), so ``except ValueError`` keeps working.
"""


class SteerflowError(Exception):
    """Base class for all steerflow errors; the CLI turns these into one-line messages."""


class ConfigError(SteerflowError, ValueError):
    """A configuration value is invalid; the message says what to change."""


class InputError(SteerflowError, ValueError):
    """A tensor, token id, prompt or CLI argument is invalid."""


class CheckpointError(SteerflowError, ValueError):
    """A checkpoint is missing, truncated, corrupt, unsafe or from an incompatible config."""


class DataError(SteerflowError, ValueError):
    """A data file or data source is missing or malformed."""


class SolverError(SteerflowError, RuntimeError):
    """An ODE solve failed: too many function evaluations, step-size underflow or non-finite state."""
