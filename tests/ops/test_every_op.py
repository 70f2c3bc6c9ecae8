"""Every public function of ``loom.ops`` runs under ``array_api_strict`` and agrees with NumPy.

The functions are found by introspection (every module of the package, every public
function defined there), so a new op without a case in :mod:`tests.ops.op_cases` fails
:func:`test_every_public_op_has_a_case`. Each case runs twice — on NumPy's array-API
namespace and on ``array_api_strict``, a namespace that rejects anything outside the
standard (array methods such as ``.reshape``, partial indices, ``out=``, NumPy dtypes) —
and the results must agree within 1e-6, dtypes included.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as numpy_xp
import numpy as np
import pytest

import loom.ops
from tests.conftest import strict_namespace
from tests.ops.helpers import dtype_name, host
from tests.ops.op_cases import CASES

TOLERANCE = 1e-6


def public_ops() -> dict[str, Callable[..., Any]]:
    """``loom.ops.<module>.<name>`` -> function, for every public function defined in ``loom.ops``.

    Public: named in the module's ``__all__`` or not starting with ``_``; functions a module
    re-exports from another one are listed once, under their own module.
    """
    found: dict[str, Callable[..., Any]] = {}
    for info in pkgutil.iter_modules(loom.ops.__path__):
        module = importlib.import_module(f"loom.ops.{info.name}")
        names = set(getattr(module, "__all__", ())) | {n for n in vars(module) if not n.startswith("_")}
        for name in names:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and obj.__module__.startswith("loom.ops."):
                found[f"{obj.__module__}.{obj.__name__}"] = obj
    return found


PUBLIC = public_ops()


def test_every_public_op_has_a_case() -> None:
    assert len(PUBLIC) > 60, f"found only {len(PUBLIC)} public ops: is the enumeration broken?"
    missing = sorted(set(PUBLIC) - set(CASES))
    assert not missing, f"public ops without a case in tests/ops/op_cases.py: {missing}"
    stale = sorted(set(CASES) - set(PUBLIC))
    assert not stale, f"cases of functions that are not public ops (renamed or removed?): {stale}"


class _Counted:
    """The op, counting its calls (so a case that forgets to call it fails)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic | type)


def _comparable(value: Any) -> Any:
    """Nested plain values: arrays become ``("array", dtype name, numpy array)``."""
    if _is_array(value):
        return ("array", dtype_name(value.dtype), host(value))
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _comparable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_comparable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _assert_same(got: Any, want: Any, where: str) -> None:
    if isinstance(want, tuple) and want and want[0] == "array":
        assert isinstance(got, tuple) and got[0] == "array", f"{where}: expected an array, got {got!r:.80}"
        assert got[1] == want[1], f"{where}: dtype {got[1]}, NumPy gives {want[1]}"
        assert got[2].shape == want[2].shape, f"{where}: shape {got[2].shape}, NumPy gives {want[2].shape}"
        np.testing.assert_allclose(got[2], want[2], rtol=TOLERANCE, atol=TOLERANCE, err_msg=where)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys {got!r:.80} vs {want!r:.80}"
        for key in want:
            _assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r:.80} vs {want!r:.80}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=TOLERANCE, abs=TOLERANCE), f"{where}: {got} vs {want}"
    else:
        assert got == want, f"{where}: {got!r} vs {want!r}"


def _run(name: str, xp: Any) -> Any:
    op = _Counted(PUBLIC[name])
    result = CASES[name](op, xp)
    assert op.calls > 0, f"the case of {name} never called it"
    return _comparable(result)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_op_under_array_api_strict_matches_numpy(name: str) -> None:
    want = _run(name, numpy_xp)
    with np.errstate(over="ignore"):  # SwiGLU's exp(-gate) may overflow to inf (the correct -0 result)
        got = _run(name, strict_namespace())
    _assert_same(got, want, name)


def test_the_comparison_catches_a_difference() -> None:
    """The checker itself: a dtype, a value and a structure difference are all reported."""
    base = _comparable((np.ones(3, np.float32), {"a": 1.0}))
    for changed in (
        _comparable((np.ones(3, np.float64), {"a": 1.0})),
        _comparable((np.ones(3, np.float32) + 2e-6, {"a": 1.0})),
        _comparable((np.ones(3, np.float32), {"b": 1.0})),
    ):
        with pytest.raises(AssertionError):
            _assert_same(changed, base, "probe")
