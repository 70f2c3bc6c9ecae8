"""Which features of a network Go LOOM would run differently, or not at all.

loom's bundles load in Go LOOM (same layout and keys), but loom also computes
things Go does not, and Go ignores keys it does not know. A bundle that uses
them loads in Go without a word and computes something else there:

=====================================  =============================================================
feature                                what Go LOOM does with it
=====================================  =============================================================
activation id >= 5 (``linear``,        reads the name as ScaledReLU (``max(0, 1.1 x)``)
``gelu``, ``silu``, ...)
``num_kv_heads`` (grouped K/V heads)   drops it; K/V are sized for fewer heads, the forward panics
``head_dim`` other than d/heads        recomputes ``d_model / num_heads``
``causal: false`` / ``rope_theta``     always causal, always RoPE theta 1e6
MHA with ``batch_size > 1``            runs every sample as one causal sequence
MHA inside a Parallel branch           reloads without its head size: outputs only its output bias
``residual`` layer                     cannot load the bundle (``unknown layer type: residual``)
``grid_scatter`` with ``branch_index``  places branch ``i`` at ``grid_positions[i]`` (list order)
not equal to the list position
``stateful: true`` RNN/LSTM            starts every forward from zero state
LayerNorm over more rows than          normalises ``batch_size`` rows only, the others become 0
``batch_size``
=====================================  =============================================================

Training differs on purpose as well (exact gradients, every parameter trains:
``docs/differences-from-go.md``); that is not a property of the saved model and
is not reported here.

:func:`go_compatibility_report` lists the findings; :func:`check_go_compatibility`
turns them into a :class:`~loom.errors.ConfigError` (strict) or a
:class:`GoCompatibilityWarning` — what ``save_model_to_string(...,
go_compatible=True | "warn")`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from loom.errors import ConfigError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers import kind_for
from loom.nn.layers.parallel import COMBINE_MODES
from loom.ops.activations import activation_name

__all__ = [
    "GO_ACTIVATION_IDS",
    "GoCompatibilityFinding",
    "GoCompatibilityWarning",
    "GoCompatibleMode",
    "check_go_compatibility",
    "go_compatibility_report",
]

#: Activation ids Go LOOM knows by name (ScaledReLU, Sigmoid, Tanh, Softplus, LeakyReLU).
GO_ACTIVATION_IDS = frozenset(range(5))

#: ``go_compatible`` argument of the save functions: False (no check), True / "strict", "warn".
GoCompatibleMode: TypeAlias = bool | Literal["strict", "warn"]

_GO_ROPE_THETA = 1_000_000.0
#: Layer types whose forward reads the activation (others write it but never apply it).
_ACTIVATED_TYPES = frozenset({"dense", "conv2d", "residual"})


class GoCompatibilityWarning(UserWarning):
    """A saved network uses features Go LOOM would run differently (``go_compatible="warn"``)."""


@dataclass(frozen=True)
class GoCompatibilityFinding:
    """One feature of one layer that Go LOOM would run differently.

    Attributes
    ----------
    path : str
        JSON path of the layer (``layers[1].branches[0]``).
    feature : str
        The loom feature (``activation 'gelu' (id 6)``).
    go_behaviour : str
        What Go LOOM does with it instead.
    """

    path: str
    feature: str
    go_behaviour: str

    def __str__(self) -> str:
        return f"{self.path}: {self.feature} — Go LOOM {self.go_behaviour}"

    def to_dict(self) -> dict[str, str]:
        """``{"path", "feature", "go_behaviour"}``."""
        return {"path": self.path, "feature": self.feature, "go_behaviour": self.go_behaviour}


def _layer_findings(cfg: LayerConfig, batch_size: int, in_branch: bool) -> Iterator[GoCompatibilityFinding]:
    path = cfg.path
    act = int(cfg.activation)
    if cfg.type in _ACTIVATED_TYPES and act not in GO_ACTIVATION_IDS:
        yield GoCompatibilityFinding(
            path,
            f"activation {activation_name(act)!r} (id {act})",
            "reads it as ScaledReLU (max(0, 1.1·x)), so the layer computes something else",
        )
    if cfg.type == "residual":
        yield GoCompatibilityFinding(path, "layer type 'residual'", "cannot load it (unknown layer type: residual)")
    if cfg.type == "multi_head_attention":
        yield from _attention_findings(cfg, batch_size, in_branch)
    if cfg.type == "softmax" and batch_size > 1:
        yield GoCompatibilityFinding(
            path,
            f"softmax with batch_size {batch_size}",
            "normalises over the whole flat batch instead of each sample on its own",
        )
    if cfg.type in ("rnn", "lstm") and cfg.stateful:
        yield GoCompatibilityFinding(path, "stateful: true", "ignores it and starts every forward from zero state")
    if cfg.type == "parallel" and COMBINE_MODES.get(cfg.combine_mode) == "grid_scatter":
        moved = [i for i, pos in enumerate(cfg.grid_positions) if pos.branch_index != i]
        if moved:
            yield GoCompatibilityFinding(
                path,
                f"grid_scatter branch_index out of list order (grid_positions{moved})",
                "ignores branch_index and places branch i at grid_positions[i]",
            )


def _attention_findings(cfg: LayerConfig, batch_size: int, in_branch: bool) -> Iterator[GoCompatibilityFinding]:
    path = cfg.path
    if cfg.num_kv_heads and cfg.num_kv_heads != cfg.num_heads:
        yield GoCompatibilityFinding(
            path,
            f"num_kv_heads {cfg.num_kv_heads} (grouped K/V heads)",
            "drops num_kv_heads; its forward then indexes past the K/V weights and panics",
        )
    if cfg.num_heads and cfg.head_dim and cfg.head_dim != cfg.d_model // cfg.num_heads:
        yield GoCompatibilityFinding(
            path, f"head_dim {cfg.head_dim}", f"uses d_model / num_heads = {cfg.d_model // cfg.num_heads}"
        )
    if not cfg.causal:
        yield GoCompatibilityFinding(path, "causal: false", "always applies a causal mask")
    if cfg.rope_theta != _GO_ROPE_THETA:
        yield GoCompatibilityFinding(path, f"rope_theta {cfg.rope_theta:g}", "always uses RoPE theta 1e6")
    if batch_size > 1:
        yield GoCompatibilityFinding(
            path,
            f"multi-head attention with batch_size {batch_size}",
            "runs all samples as one causal sequence (RoPE positions run across samples)",
        )
    if in_branch:
        yield GoCompatibilityFinding(
            path,
            "multi-head attention inside a Parallel branch",
            "reloads it without its head size, so the branch outputs only its output bias",
        )


def _norm_rows_finding(cfg: LayerConfig, in_features: int | None, batch_size: int):
    if cfg.type != "layer_norm" or not in_features or not cfg.norm_size or in_features <= cfg.norm_size:
        return None
    rows = in_features // cfg.norm_size
    return GoCompatibilityFinding(
        cfg.path,
        f"layer_norm over {rows} rows per sample (input {in_features}, norm_size {cfg.norm_size})",
        f"normalises only the first batch_size={batch_size} rows and outputs zeros for the others",
    )


def _walk(cfg: LayerConfig, in_features: int | None, batch_size: int, in_branch: bool):
    yield from _layer_findings(cfg, batch_size, in_branch)
    finding = _norm_rows_finding(cfg, in_features, batch_size)
    if finding is not None:
        yield finding
    for branch in cfg.branches:
        yield from _walk(branch, in_features, batch_size, True)


def _output_features(cfg: LayerConfig, in_features: int | None) -> int | None:
    try:
        return kind_for(cfg.type).infer(cfg, in_features, cfg.path)
    except Exception:  # sizes that cannot be followed statically: later row checks are skipped
        return None


def go_compatibility_report(net: Any) -> list[GoCompatibilityFinding]:
    """Every feature of ``net`` that Go LOOM would run differently or not at all.

    Parameters
    ----------
    net : loom.Network
        The network (its layers, grid and ``batch_size``).

    Returns
    -------
    list of GoCompatibilityFinding
        In layer order (branches after their Parallel); empty when a Go LOOM
        build would compute exactly what loom computes.

    Examples
    --------
    >>> import loom
    >>> from loom.nn.go_compat import go_compatibility_report
    >>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
    ...     "layers_per_cell": 1, "layers": [{"type": "dense", "input_size": 2, "output_size": 2,
    ...     "activation": "gelu"}]})
    >>> [str(f) for f in go_compatibility_report(net)]  # doctest: +ELLIPSIS
    ["layers[0]: activation 'gelu' (id 6) — Go LOOM reads it as ScaledReLU ..."]
    """
    findings: list[GoCompatibilityFinding] = []
    features = net.input_size
    batch = int(net.batch_size)
    for cfg in net.layers:
        findings.extend(_walk(cfg, features, batch, False))
        features = _output_features(cfg, features)
    return findings


def check_go_compatibility(net: Any, mode: GoCompatibleMode = True) -> list[GoCompatibilityFinding]:
    """Enforce Go compatibility: raise (``True``/``"strict"``), warn (``"warn"``) or only report (False).

    Parameters
    ----------
    net : loom.Network
    mode : bool or {"strict", "warn"}

    Returns
    -------
    list of GoCompatibilityFinding
        The findings (empty for a network Go runs exactly as loom does).

    Raises
    ------
    ConfigError
        In strict mode, when there is any finding; the message lists every layer path and feature.
    """
    if mode not in (True, False, "strict", "warn"):
        raise ConfigError(f"go_compatible: expected True, False, 'strict' or 'warn', got {mode!r}")
    findings = go_compatibility_report(net)
    if not findings or not mode:
        return findings
    listing = "; ".join(str(f) for f in findings)
    message = f"the network uses {len(findings)} feature(s) Go LOOM would run differently: {listing}"
    if mode == "warn":
        warnings.warn(message, GoCompatibilityWarning, stacklevel=3)
        return findings
    raise ConfigError(f"go_compatible: {message}")
