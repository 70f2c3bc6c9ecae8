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
    "LoomError",
    "ModelFormatError",
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
    """Training produced a non-finite loss; the message names the epoch and batch."""

    def __init__(self, message: str, *, epoch: int, batch: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
