"""The key/value cache of one sequence (llama2.c's ``RunState``), preallocated for its whole length."""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.backend import Backend
from loom.llm.config import TransformerConfig

__all__ = ["RunState"]


class RunState:
    """Preallocated key/value cache of one sequence (llama2.c ``RunState``).

    Parameters
    ----------
    config : TransformerConfig
        Model sizes.
    max_seq_len : int
        Capacity in tokens (prompt + generated).
    backend : Backend
        Where the cache lives.
    dtype : dtype
        Cache dtype (the model's compute dtype).

    Attributes
    ----------
    keys, values : array
        ``[L, Hk, max_seq_len, hd]``; position ``p`` of layer ``l`` is ``[l, :, p, :]``.
    pos : int
        Number of positions already filled.
    """

    def __init__(self, config: TransformerConfig, max_seq_len: int, backend: Backend, dtype: Any = np.float32) -> None:
        shape = (config.num_layers, config.num_kv_heads, max_seq_len, config.head_dim)
        self.keys = backend.zeros(shape, dtype)
        self.values = backend.zeros(shape, dtype)
        self.max_seq_len = max_seq_len
        self.pos = 0

    def reset(self) -> None:
        """Forget the cached sequence (the buffers are reused)."""
        self.pos = 0
