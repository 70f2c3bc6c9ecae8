"""LOOM README, "Method Introspection" and "Runtime Introspection" — the Pythonic port.

Every public method of a network is discoverable at run time with its real
parameter names and types: ``list_methods``, ``get_methods`` (``get_methods_json``
as JSON text), ``has_method`` and ``get_method_signature``; the LOOM names
(``ListMethods``, ``GetMethodsJSON``, ...) do the same. ``introspection_compat.py``
is the JSON-convention port.

    python examples/introspection.py
"""

from __future__ import annotations

import argparse
import json

import loom
from loom.demo_data import JSON_BLOCK_CONFIG as CONFIG  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """List the methods with their signatures; returns what it found."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    network = loom.create_network_from_json(CONFIG, seed=0)

    # List all available methods
    methods = network.list_methods()
    print(f"Available methods ({len(methods)}):", methods)

    # Get detailed method information
    parsed_methods = json.loads(network.get_methods_json())  # or network.get_methods() for the list itself
    for method in parsed_methods:
        params = ", ".join(f"{p['name']}: {p['type']}" for p in method["parameters"])
        print(f"{method['method_name']}({params}) -> {', '.join(method['returns'])}")

    # Check if a specific method exists
    signature = None
    if network.has_method("ForwardCPU"):
        signature = network.get_method_signature("ForwardCPU")
        print("Signature:", signature)  # Go LOOM: "ForwardCPU([]float32) ([]float32, time.Duration)"

    untyped = [
        (m["method_name"], p["name"]) for m in parsed_methods for p in m["parameters"] if p["type"] in ("", "Any")
    ]
    assert not untyped, f"every parameter has a concrete type: {untyped}"
    return {"methods": methods, "details": parsed_methods, "signature": signature}


if __name__ == "__main__":
    main()
