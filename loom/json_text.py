"""``JSONText``: JSON text, as LOOM's JavaScript API returns it, that also reads like the parsed object.

LOOM's WASM functions return JSON text (``JSON.parse(GenerateText(...)).generated_text``);
Python code wants the value. A :class:`JSONText` is a ``str`` — the exact JSON text,
so ``json.loads(result)`` works as ``JSON.parse`` does — whose object fields can
also be read directly: ``result["generated_text"]``, ``result.generated_text``,
``result.value`` (the parsed object). Integer indexes and slices keep ``str``'s
meaning (characters of the text).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JSONText"]


class JSONText(str):
    """JSON text of an object whose fields are readable by key or attribute.

    Examples
    --------
    >>> import json
    >>> r = JSONText.of({"generated_text": "Once upon a time", "num_tokens": 0, "success": True})
    >>> r["generated_text"] == json.loads(r)["generated_text"] == r.generated_text
    True
    >>> r.startswith("{")
    True
    """

    __slots__ = ()

    @classmethod
    def of(cls, value: dict[str, Any], *, sort_keys: bool = True) -> JSONText:
        """The JSON text of ``value`` (keys sorted, as Go writes a map)."""
        return cls(json.dumps(value, sort_keys=sort_keys))

    @property
    def value(self) -> Any:
        """The parsed JSON value."""
        return json.loads(self)

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            value = self.value
            if isinstance(value, dict):
                return value[key]
            raise TypeError(f"the JSON text holds a {type(value).__name__}, not an object; key {key!r} is undefined")
        return str.__getitem__(self, key)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self.value
        if isinstance(value, dict) and name in value:
            return value[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or JSON field {name!r}")

    def get(self, key: str, default: Any = None) -> Any:
        """``self.value.get(key, default)`` for an object."""
        value = self.value
        return value.get(key, default) if isinstance(value, dict) else default

    def keys(self) -> list[str]:
        """Field names of the JSON object."""
        value = self.value
        return list(value) if isinstance(value, dict) else []
