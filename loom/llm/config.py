"""Transformer hyper-parameters parsed from a Hugging Face ``config.json``.

:class:`TransformerConfig` is the llama2.c ``Config`` of loom: plain numbers and
flags, no arrays. It is built from the ``config.json`` dict (plus the optional
``generation_config.json`` dict) and detects the architecture family from
``architectures`` / ``model_type``:

* ``"llama"`` – LLaMA-style pre-norm decoders: RMSNorm, RoPE, GQA, SwiGLU MLP
  (``llama``, ``smollm``, ``mistral`` without a sliding window, ``qwen2``);
* ``"gpt2"`` – GPT-2: LayerNorm with bias, learned positions, tanh GELU,
  Conv1D weights stored ``[in, out]``.

RoPE settings are read both from the transformers-5 ``rope_parameters`` dict and
from the older top-level ``rope_theta`` / ``rope_scaling`` keys; see
:mod:`loom.llm.rope` for the frequency math.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loom import safe_json
from loom.errors import ModelFormatError, ShapeError

__all__ = ["SUPPORTED_ARCHITECTURES", "RopeConfig", "TransformerConfig", "load_config_file"]

#: ``model_type`` / architecture prefix -> loom family.
_MODEL_TYPES = {
    "llama": "llama",
    "smollm": "llama",
    "smollm2": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "gpt2": "gpt2",
}
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "GPT2LMHeadModel": "gpt2",
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHITECTURES)
_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
#: Numeric RoPE scaling keys; each must be a finite number > 0 when present.
_ROPE_NUMBERS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
)
#: Largest size a config field may state (sizes are checked against the tensors anyway).
_MAX_SIZE = 2**31 - 1


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding settings, Hugging Face ``rope_parameters`` style.

    Parameters
    ----------
    rope_type : str
        One of ``default``, ``linear``, ``dynamic``, ``llama3``, ``yarn``.
    theta : float
        Base of the inverse frequencies (``rope_theta``).
    head_dim : int
        Size of one attention head.
    partial_rotary_factor : float
        Fraction of ``head_dim`` that is rotated (1.0 for LLaMA).
    max_position_embeddings : int
        Context length the model was configured for.
    params : dict
        The remaining scaling keys (``factor``, ``low_freq_factor``, ...).
    """

    rope_type: str
    theta: float
    head_dim: int
    partial_rotary_factor: float = 1.0
    max_position_embeddings: int = 2048
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rotary_dim(self) -> int:
        """Number of rotated components per head (even)."""
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of a decoder-only transformer.

    Build with :meth:`from_dict` (a parsed ``config.json``) or :meth:`from_dir`.

    Attributes
    ----------
    architecture : str
        Family the forward pass follows: ``"llama"`` or ``"gpt2"``.
    model_type : str
        The ``model_type`` of the file (``llama``, ``mistral``, ``qwen2``, ``gpt2``...).
    vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim : int
        Sizes; ``num_kv_heads < num_heads`` means grouped-query attention.
    intermediate_size : int
        Width of the MLP hidden layer.
    max_position_embeddings : int
        Longest sequence the model supports (GPT-2: ``n_positions``).
    norm_eps : float
        RMSNorm / LayerNorm epsilon.
    tie_word_embeddings : bool
        The LM head is the token embedding matrix.
    attention_bias, attention_out_bias, mlp_bias : bool
        Which projections carry a bias.
    rope : RopeConfig or None
        RoPE settings (None for GPT-2).
    eos_token_ids : tuple of int
        End-of-sequence ids from ``config.json`` and ``generation_config.json``.
    bos_token_id : int or None
        Beginning-of-sequence id.
    attn_scale_by_layer : bool
        GPT-2 ``scale_attn_by_inverse_layer_idx``.
    """

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool = False
    attention_out_bias: bool = False
    mlp_bias: bool = False
    rope: RopeConfig | None = None
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    attn_scale_by_layer: bool = False

    @property
    def num_kv_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    @property
    def qkv_size(self) -> int:
        """Width of the fused Q/K/V projection output."""
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    @property
    def context_length(self) -> int | None:
        """Most positions a sequence may hold: ``max_position_embeddings`` for GPT-2's learned
        positions and LLaMA's ``dynamic`` RoPE, ``None`` (no limit) for the other RoPE types."""
        limited = self.architecture != "llama" or (self.rope is not None and self.rope.rope_type == "dynamic")
        return self.max_position_embeddings if limited else None

    def check_length(self, n: int) -> None:
        """``ShapeError`` when a sequence of ``n`` positions exceeds :attr:`context_length`."""
        limit = self.context_length
        if limit is not None and n > limit:
            raise ShapeError(
                f"sequence of {n} tokens exceeds the model's context of {limit} "
                "positions (max_position_embeddings / n_positions)"
            )

    def token_ids(self, ids: Any) -> np.ndarray:
        """``ids`` as a 1-D int64 NumPy array of valid token ids (``ShapeError`` naming the problem)."""
        array = np.asarray(ids)
        if array.ndim != 1 or array.size == 0:
            raise ShapeError(f"token ids: expected a non-empty 1-D sequence, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ShapeError(f"token ids: expected integers, got dtype {array.dtype}")
        bad = (array < 0) | (array >= self.vocab_size)
        if bad.any():
            raise ShapeError(
                f"token ids: {int(array[bad][0])} is out of range; expected 0 <= id < vocab_size ({self.vocab_size})"
            )
        return array.astype(np.int64, copy=False)

    @classmethod
    def from_dict(
        cls,
        config: Mapping[str, Any],
        generation_config: Mapping[str, Any] | None = None,
        *,
        source: str = "config.json",
    ) -> TransformerConfig:
        """Parse a Hugging Face ``config.json`` dict.

        Parameters
        ----------
        config : mapping
            The parsed ``config.json``.
        generation_config : mapping, optional
            The parsed ``generation_config.json``; its ``eos_token_id`` is added.
        source : str
            Name used in error messages.

        Returns
        -------
        TransformerConfig

        Raises
        ------
        ModelFormatError
            Unsupported architecture, or a missing / invalid field (named).

        Examples
        --------
        >>> cfg = TransformerConfig.from_dict({"model_type": "gpt2", "n_embd": 8, "n_head": 2,
        ...     "n_layer": 1, "vocab_size": 10, "n_positions": 16})
        >>> cfg.architecture, cfg.head_dim, cfg.intermediate_size
        ('gpt2', 4, 32)
        """
        if not isinstance(config, Mapping):
            raise ModelFormatError(f"{source}: expected a JSON object, got {type(config).__name__}")
        model_type = _detect_model_type(config, source)
        family = _MODEL_TYPES[model_type]
        reader = _Fields(config, source)
        eos = _eos_ids(config.get("eos_token_id"), source, "eos_token_id")
        if generation_config:
            eos = eos + tuple(
                i
                for i in _eos_ids(generation_config.get("eos_token_id"), "generation_config.json", "eos_token_id")
                if i not in eos
            )
        bos = config.get("bos_token_id")
        bos = bos if isinstance(bos, int) and not isinstance(bos, bool) else None
        if family == "gpt2":
            return cls._gpt2(reader, model_type, eos, bos)
        return cls._llama(reader, model_type, eos, bos)

    @classmethod
    def _llama(cls, f: _Fields, model_type: str, eos: tuple[int, ...], bos: int | None) -> TransformerConfig:
        hidden = f.integer("hidden_size")
        heads = f.integer("num_attention_heads")
        kv_heads = f.integer("num_key_value_heads", default=heads)
        head_dim = f.integer("head_dim", default=None) or _divide(
            hidden, heads, f.source, "hidden_size", "num_attention_heads"
        )
        if heads % kv_heads:
            raise ModelFormatError(
                f"{f.source}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )
        max_pos = f.integer("max_position_embeddings", default=2048)
        if model_type == "mistral":
            window = f.raw.get("sliding_window")
            if window is not None and (isinstance(window, bool) or not isinstance(window, int | float)):
                raise ModelFormatError(f"{f.source}: 'sliding_window' must be a number or null, got {window!r}")
            if window is not None and f.raw.get("use_sliding_window", True) and window < max_pos:
                raise ModelFormatError(
                    f"{f.source}: sliding_window={window} is not supported (loom implements "
                    "full causal attention); expected null or >= max_position_embeddings"
                )
        if model_type == "qwen2" and f.raw.get("use_sliding_window"):
            raise ModelFormatError(f"{f.source}: use_sliding_window=true is not supported")
        act = f.raw.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ModelFormatError(f"{f.source}: hidden_act={act!r} is not supported; expected 'silu'")
        attention_bias = bool(f.raw.get("attention_bias", model_type == "qwen2"))
        return cls(
            architecture="llama",
            model_type=model_type,
            vocab_size=f.integer("vocab_size"),
            hidden_size=hidden,
            num_layers=f.integer("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=f.integer("intermediate_size"),
            max_position_embeddings=max_pos,
            norm_eps=f.number("rms_norm_eps", default=1e-6),
            tie_word_embeddings=bool(f.raw.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            attention_out_bias=attention_bias and model_type != "qwen2",
            mlp_bias=bool(f.raw.get("mlp_bias", False)),
            rope=_rope_config(f, head_dim, max_pos),
            eos_token_ids=eos,
            bos_token_id=bos,
        )

    @classmethod
    def _gpt2(cls, f: _Fields, model_type: str, eos: tuple[int, ...], bos: int | None) -> TransformerConfig:
        hidden = f.integer("n_embd")
        heads = f.integer("n_head")
        act = f.raw.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ModelFormatError(f"{f.source}: activation_function={act!r} is not supported; expected 'gelu_new'")
        if f.raw.get("add_cross_attention"):
            raise ModelFormatError(f"{f.source}: add_cross_attention=true is not supported")
        return cls(
            architecture="gpt2",
            model_type=model_type,
            vocab_size=f.integer("vocab_size"),
            hidden_size=hidden,
            num_layers=f.integer("n_layer"),
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=_divide(hidden, heads, f.source, "n_embd", "n_head"),
            intermediate_size=f.integer("n_inner", default=None) or 4 * hidden,
            max_position_embeddings=f.integer("n_positions"),
            norm_eps=f.number("layer_norm_epsilon", default=1e-5),
            tie_word_embeddings=bool(f.raw.get("tie_word_embeddings", True)),
            attention_bias=True,
            attention_out_bias=True,
            mlp_bias=True,
            rope=None,
            eos_token_ids=eos,
            bos_token_id=bos,
            attn_scale_by_layer=bool(f.raw.get("scale_attn_by_inverse_layer_idx", False)),
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> TransformerConfig:
        """Read ``config.json`` (and ``generation_config.json`` if present) from a model folder."""
        folder = Path(path)
        config = load_config_file(folder / "config.json")
        gen_path = folder / "generation_config.json"
        gen = load_config_file(gen_path) if gen_path.is_file() else None
        return cls.from_dict(config, gen, source=str(folder / "config.json"))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON config file; missing or malformed → :class:`ModelFormatError`."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc})") from exc
    data = safe_json.loads(text, source=str(path), error=ModelFormatError)
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


class _Fields:
    """Typed access to config keys with errors naming the key."""

    def __init__(self, raw: Mapping[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def integer(self, key: str, *, default: Any = ...) -> Any:
        value = self.raw.get(key)
        if value is None:
            if default is ...:
                raise ModelFormatError(f"{self.source}: missing required field '{key}'")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_SIZE:
            raise ModelFormatError(
                f"{self.source}: '{key}' must be a positive integer (at most {_MAX_SIZE}), got {value!r:.80}"
            )
        return value

    def number(self, key: str, *, default: float) -> float:
        """A finite number > 0 (norm epsilons, RoPE bases and factors)."""
        value = self.raw.get(key)
        if value is None:
            return default
        return positive_number(value, f"{self.source}: '{key}'")


def positive_number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    """``value`` as a finite float ``> minimum``; ``ModelFormatError`` naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFormatError(f"{where} must be a number, got {value!r:.80}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and number > minimum):
        raise ModelFormatError(f"{where} must be a finite number > {minimum:g}, got {value!r:.80}")
    return number


def _detect_model_type(config: Mapping[str, Any], source: str) -> str:
    archs = config.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if not isinstance(archs, list):
        raise ModelFormatError(f"{source}: 'architectures' must be a list of names, got {archs!r}")
    for arch in archs:
        if isinstance(arch, str) and arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    model_type = str(config.get("model_type", "")).lower()
    if model_type in _MODEL_TYPES:
        return model_type
    found = ", ".join(map(str, archs)) or "none"
    raise ModelFormatError(
        f"{source}: unsupported architecture (architectures: {found}; model_type: "
        f"{config.get('model_type')!r}); supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
        f"(model_type {', '.join(sorted(_MODEL_TYPES))})"
    )


def _divide(a: int, b: int, source: str, name_a: str, name_b: str) -> int:
    if a % b:
        raise ModelFormatError(f"{source}: {name_a} ({a}) must be divisible by {name_b} ({b})")
    return a // b


def _eos_ids(value: Any, source: str, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ModelFormatError(f"{source}: '{key}' must be an int or a list of ints, got {value!r}")
    return tuple(dict.fromkeys(values))


def _rope_config(f: _Fields, head_dim: int, max_pos: int) -> RopeConfig:
    params = f.raw.get("rope_parameters") or f.raw.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise ModelFormatError(f"{f.source}: 'rope_parameters' must be an object, got {params!r}")
    if any(isinstance(v, Mapping) for v in params.values()):
        raise ModelFormatError(f"{f.source}: per-layer-type rope_parameters are not supported")
    params = {key: value for key, value in params.items() if value is not None}  # null = absent, as in HF
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if rope_type not in _ROPE_TYPES:
        raise ModelFormatError(
            f"{f.source}: rope_type {rope_type!r} is not supported; expected one of {list(_ROPE_TYPES)}"
        )
    theta = params.pop("rope_theta", None)
    if theta is None:
        theta = f.raw.get("rope_theta", 10000.0)
    theta = positive_number(theta, f"{f.source}: rope_theta", minimum=1.0)
    partial = params.pop("partial_rotary_factor", f.raw.get("partial_rotary_factor", 1.0)) or 1.0
    partial = positive_number(partial, f"{f.source}: partial_rotary_factor")
    if partial > 1:
        raise ModelFormatError(f"{f.source}: partial_rotary_factor must be in (0, 1], got {partial!r}")
    if rope_type in ("llama3", "yarn"):
        original = f.raw.get("original_max_position_embeddings")
        params.setdefault("original_max_position_embeddings", original or max_pos)
    required = {
        "linear": ("factor",),
        "dynamic": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
        "yarn": (),
    }
    for key in required.get(rope_type, ()):
        if params.get(key) is None:
            raise ModelFormatError(f"{f.source}: rope_type {rope_type!r} needs '{key}'")
    for key in _ROPE_NUMBERS:
        if params.get(key) is not None:
            params[key] = positive_number(params[key], f"{f.source}: rope_scaling '{key}'")
    if rope_type == "llama3" and not params["high_freq_factor"] > params["low_freq_factor"]:
        raise ModelFormatError(
            f"{f.source}: rope_scaling 'high_freq_factor' must be greater than 'low_freq_factor', got "
            f"{params['high_freq_factor']!r} and {params['low_freq_factor']!r}"
        )
    rope = RopeConfig(rope_type, float(theta), head_dim, float(partial), max_pos, params)
    if rope.rotary_dim % 2 or rope.rotary_dim <= 0:
        raise ModelFormatError(
            f"{f.source}: rotary dimension {rope.rotary_dim} (head_dim × partial_rotary_factor) "
            "must be a positive even number"
        )
    return rope
