"""Exception types raised by loom.

Every error loom raises on purpose derives from :class:`LoomError`, so callers
can catch the whole family with one ``except`` clause.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "BundleConfigError",
    "ChatTemplateError",
    "ConfigError",
    "DataFormatError",
    "DistributedError",
    "DistributedTimeoutError",
    "LoomError",
    "MissingDependencyError",
    "ModelFormatError",
    "RankFailedError",
    "ShapeError",
    "TrainingDivergedError",
]


class LoomError(Exception):
    """Base class of every loom error."""


class ConfigError(LoomError, ValueError):
    """A network / training config is invalid; the message names the field (JSON path)."""


class ShapeError(LoomError, ValueError):
    """An input, target or gradient has the wrong length or shape (expected vs got)."""


class ModelFormatError(LoomError, ValueError):
    """A model file (LOOM bundle, safetensors, GGUF, config.json) is unreadable or inconsistent."""


class BundleConfigError(ModelFormatError, ConfigError):
    """A model bundle whose network config is invalid: catchable as either parent.

    The message keeps the config's JSON path (``models[0].cfg.layers[2].output_size: ...``).
    """


class ChatTemplateError(ModelFormatError):
    """A model's chat template failed to compile or render, or went over a rendering limit."""


class BackendUnavailableError(LoomError, RuntimeError):
    """The requested array backend (e.g. CuPy / CUDA) cannot be used on this machine."""


class TrainingDivergedError(LoomError, FloatingPointError):
    """Training produced a non-finite loss; the message names the epoch and batch.

    Attributes: ``epoch`` and ``batch`` (1-based), ``last_finite_loss`` (``None`` when the
    first step diverged). The network keeps the weights of its last finite step.
    """

    def __init__(self, message: str, *, epoch: int, batch: int, last_finite_loss: float | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.last_finite_loss = last_finite_loss


class DistributedError(LoomError, RuntimeError):
    """A multi-process (MPI / NCCL) operation failed; ``rank`` is the process that raised it."""

    def __init__(self, message: str, *, rank: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank


class RankFailedError(DistributedError):
    """Another rank raised (or exited) while this one was working with it.

    ``failed_rank`` is that rank's number and ``remote_message`` its error text
    (``"ValueError: ..."``), so every rank of a job reports the same cause.
    """

    def __init__(self, message: str, *, rank: int | None, failed_rank: int, remote_message: str) -> None:
        super().__init__(message, rank=rank)
        self.failed_rank = failed_rank
        self.remote_message = remote_message


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective operation did not complete within the communicator's timeout."""

    def __init__(self, message: str, *, rank: int | None, operation: str, timeout: float) -> None:
        super().__init__(message, rank=rank)
        self.operation = operation
        self.timeout = timeout


class DataFormatError(LoomError, ValueError):
    """A data file (CSV, .npz, LOOM batch JSON) is unreadable or holds the wrong values; names file and column."""


class MissingDependencyError(LoomError, ImportError):
    """An optional dependency (an extra such as ``plot``) is not installed; the message gives the pip command."""
