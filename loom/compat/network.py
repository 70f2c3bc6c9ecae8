"""``CompatNetwork``: a :class:`loom.Network` whose every method speaks LOOM's JSON convention.

As in LOOM's WASM build, every public method of the network is available on the
wrapper — discovered by introspection when first used, so a method added to
``Network`` tomorrow is bridged today — and each one takes **the JSON text of
its argument list** and returns **the JSON text of its result list**::

    net = loom.compat.createNetworkFromJSON(json.dumps(config))
    json.loads(net.ForwardCPU(json.dumps([[0.2] * 4 + [0.8] * 4])))   # [[0.95, 0.05], 183000]
    json.loads(net.Train(json.dumps([batches, {"Epochs": 10}])))[0]["FinalLoss"]
    json.loads(net.SaveModelToString(json.dumps(["my_model"])))[0]   # the bundle text

Errors come back as text (:mod:`loom.compat.bridge` lists the shapes) unless the
error mode is ``"raise"``. ``.native`` is the wrapped :class:`loom.Network`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from loom.compat.bridge import call_with_json, spec_of
from loom.nn.network import Network

__all__ = ["CompatNetwork", "wrap"]


@cache
def _method_spec(cls: type, name: str) -> Any:
    return spec_of(getattr(cls, name), name)


class CompatNetwork:
    """JSON-convention view of a :class:`loom.Network` (LOOM's WASM network object).

    Parameters
    ----------
    network : loom.Network
        The network; it is shared, not copied (``.native`` returns it).
    errors : {"return", "raise"}, optional
        Error mode of this wrapper (default: the context's, ``loom.compat.get_error_mode()``).

    Examples
    --------
    >>> import json, loom
    >>> net = loom.compat.wrap(loom.new_network(2, 1, 1, 1))
    >>> json.loads(net.TotalLayers())
    [1]
    >>> net.HasMethod(json.dumps(["ForwardCPU"]))
    '[true]'
    """

    __slots__ = ("_errors", "_methods", "_network")

    def __init__(self, network: Network, *, errors: str | None = None) -> None:
        if not isinstance(network, Network):
            raise TypeError(f"CompatNetwork wraps a loom.Network, got {type(network).__name__}")
        self._network = network
        self._errors = errors
        self._methods: dict[str, Callable[[Any], str]] = {}

    @property
    def native(self) -> Network:
        """The wrapped :class:`loom.Network` (Python values in, Python values out)."""
        return self._network

    def __getattr__(self, name: str) -> Callable[[Any], str]:
        if name.startswith("_"):
            raise AttributeError(name)
        methods = self._methods
        bridge = methods.get(name)
        if bridge is None:
            network = self._network
            if not network.has_method(name):
                raise AttributeError(
                    f"the network has no method {name!r}; ListMethods() lists the {len(network.list_methods())} it has"
                )
            spec = _method_spec(type(network), name)
            errors = self._errors

            def bridge(args_json: str | bytes | None = None) -> str:
                return call_with_json(getattr(network, name), spec, args_json, errors)

            bridge.__name__ = bridge.__qualname__ = name
            bridge.__doc__ = (
                f"{name} with LOOM's JSON convention: the JSON text of the argument list "
                f"{list(spec.names)} in, the JSON text of the result list out."
            )
            methods[name] = bridge
        return bridge

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(self._network.list_methods()))

    def __repr__(self) -> str:
        return f"CompatNetwork({self._network!r})"


def wrap(network: Network, *, errors: str | None = None) -> CompatNetwork:
    """The JSON-convention view of an existing ``loom.Network`` (shared, not copied)."""
    return CompatNetwork(network, errors=errors)
