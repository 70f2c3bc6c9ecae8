"""LOOM README, "Method Introspection" and "Runtime Introspection" — the ``loom.compat`` port.

The README's two blocks as written, with the result lists parsed as the reflection
wrapper returns them: ``JSON.parse(network.ListMethods())[0]`` is the list of
names; ``JSON.parse(network.GetMethodsJSON())[0]`` is JSON text to parse again;
``JSON.parse(network.GetMethods())`` is the list of method objects (``GetMethods`` gives
one result per method); ``HasMethod`` and ``GetMethodSignature`` take
``JSON.stringify([name])`` (a bare name is accepted too).

    python examples/introspection_compat.py
"""

from __future__ import annotations

import argparse
import json

from loom.compat import createLoomNetwork
from loom.demo_data import JSON_BLOCK_CONFIG as config  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """List the methods with their signatures; returns what it found."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    network = createLoomNetwork(json.dumps(config), seed=0)

    # List all available methods
    methods = json.loads(network.ListMethods())[0]
    print("Available methods:", methods)

    # Get detailed method information
    methods_json = json.loads(network.GetMethodsJSON())[0]
    parsed_methods = json.loads(methods_json)
    for method in parsed_methods:
        print(f"{method['method_name']}({', '.join(p['type'] for p in method['parameters'])}) -> "
              f"{', '.join(method['returns'])}")  # fmt: skip

    # Get all methods with metadata
    methods_json = network.GetMethods()
    methods_list = json.loads(methods_json)
    print(f"Network has {len(methods_list)} methods")
    for method in methods_list:
        params = ", ".join(f"{p['name']}: {p['type']}" for p in method["parameters"])
        print(f"{method['method_name']}({params}) -> {', '.join(method['returns'])}")

    # Check if specific method exists
    signature = None
    if json.loads(network.HasMethod(json.dumps(["ForwardCPU"])))[0]:
        signature = json.loads(network.GetMethodSignature(json.dumps(["ForwardCPU"])))[0]
        print("Signature:", signature)

    # List all method names
    names = json.loads(network.ListMethods())[0]
    print("Available:", names)
    assert methods_list == parsed_methods and names == methods
    return {"methods": methods, "details": parsed_methods, "signature": signature}


if __name__ == "__main__":
    main()
