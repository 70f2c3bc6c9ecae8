"""Runtime introspection of ``Network`` methods (LOOM's ``ListMethods`` family).

Method names are discovered from the class itself (both the Pythonic and the
LOOM CamelCase names), with parameter and return types taken from the Python
annotations.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from loom.errors import LoomError

__all__ = ["IntrospectionMixin"]


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", str(annotation))


class IntrospectionMixin:
    """Adds ``list_methods`` / ``get_methods_json`` / ``get_method_signature`` / ``has_method``."""

    @classmethod
    def _public_methods(cls) -> dict[str, Any]:
        return {
            name: member
            for name, member in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not name.startswith("_")
        }

    def list_methods(self) -> list[str]:
        """Sorted names of every public method (Pythonic and LOOM names)."""
        return sorted(self._public_methods())

    def has_method(self, name: str) -> bool:
        """True if ``name`` is a public method (exact, case-sensitive)."""
        return name in self._public_methods()

    def _method_info(self, name: str) -> dict[str, Any]:
        func = self._public_methods()[name]
        sig = inspect.signature(func)
        params = [
            {"name": p.name, "type": _type_name(p.annotation)} for p in sig.parameters.values() if p.name != "self"
        ]
        ret = sig.return_annotation
        returns = [] if ret in (None, "None") else [_type_name(ret)]
        return {"method_name": name, "parameters": params, "returns": returns}

    def get_methods(self) -> list[dict[str, Any]]:
        """``[{"method_name", "parameters": [{"name", "type"}], "returns": [...]}]`` for every method."""
        return [self._method_info(name) for name in self.list_methods()]

    def get_methods_json(self) -> str:
        """:meth:`get_methods` as indented JSON text."""
        return json.dumps(self.get_methods(), indent=2)

    def get_method_signature(self, name: str) -> str:
        """``"name(type, ...) -> return"``; unknown names raise ``LoomError``."""
        if not self.has_method(name):
            raise LoomError(f"method {name} not found")
        info = self._method_info(name)
        params = ", ".join(f"{p['name']}: {p['type']}" for p in info["parameters"])
        returns = info["returns"]
        return f"{name}({params})" + (f" -> {returns[0]}" if returns else "")

    # LOOM names
    def ListMethods(self) -> list[str]:
        """LOOM name of :meth:`list_methods`."""
        return self.list_methods()

    def HasMethod(self, name: str) -> bool:
        """LOOM name of :meth:`has_method`."""
        return self.has_method(name)

    def GetMethodSignature(self, name: str) -> str:
        """LOOM name of :meth:`get_method_signature`."""
        return self.get_method_signature(name)

    def GetMethodsJSON(self) -> str:
        """LOOM name of :meth:`get_methods_json`."""
        return self.get_methods_json()

    def GetMethods(self) -> list[dict[str, Any]]:
        """LOOM name of :meth:`get_methods`."""
        return self.get_methods()
