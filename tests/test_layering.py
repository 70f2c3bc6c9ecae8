"""The layering of ``loom/``, read from the parsed imports of every module (:mod:`tests.import_graph`).

Rules:

* ``loom.ops`` imports only ``loom.ops``, ``loom.backend`` and ``loom.errors``;
* ``loom.backend`` imports only ``loom.backend`` and ``loom.errors``;
* ``loom.nn`` never imports ``loom.llm``, and ``loom.llm`` never imports ``loom.nn``;
* only ``loom.backend`` imports ``cupy`` / ``cupyx``;
* no import cycles anywhere in ``loom/``.

What counts: every import statement, also inside functions — a deferred import still ties the
two modules together, and hiding one in a function is how cycles are usually papered over;
cycles are broken by moving code to where it belongs. Imports under ``if TYPE_CHECKING:``
obey the layer rules but are exempt from the cycle rule: they never run, and they are how a
module names in its annotations a type whose module depends on it (the trainers annotate
``net: Network``, and ``Network`` calls the trainers).

The self-check at the end builds a small package with every kind of violation and shows that
each one is reported.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.import_graph import ImportGraph, find_cycles, read_package

LOOM = Path(__file__).resolve().parents[1] / "loom"

#: Package -> the loom packages and modules it may import (itself included).
ALLOWED_INTERNAL = {
    "loom.ops": ("loom.ops", "loom.backend", "loom.errors"),
    "loom.backend": ("loom.backend", "loom.errors"),
}
#: (importer package, imported package) pairs that must never occur.
FORBIDDEN = (("loom.nn", "loom.llm"), ("loom.llm", "loom.nn"))
#: Third-party modules only ``loom.backend`` may import.
BACKEND_ONLY = ("cupy", "cupyx")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: ImportGraph, root: str = "loom") -> list[str]:
    """Every import that breaks a layer rule, as ``path:line: importer imports target (rule)``."""
    found = []
    for imp in graph.imports:
        rules = []
        for package, allowed in ALLOWED_INTERNAL.items():
            if (
                _within(imp.importer, package)
                and _within(imp.target, root)
                and not any(_within(imp.target, ok) for ok in allowed)
            ):
                rules.append(f"{package} may import only {', '.join(allowed)}")
        rules += [
            f"{importer} must not import {imported}"
            for importer, imported in FORBIDDEN
            if _within(imp.importer, importer) and _within(imp.target, imported)
        ]
        if any(_within(imp.target, name) for name in BACKEND_ONLY) and not _within(imp.importer, "loom.backend"):
            rules.append("only loom.backend imports cupy/cupyx")
        found += [f"{imp.where()}: {imp.importer} imports {imp.target} ({rule})" for rule in rules]
    return found


def runtime_cycles(graph: ImportGraph) -> list[list[str]]:
    """Import cycles through statements that run (module level or in functions; not ``TYPE_CHECKING``)."""
    return find_cycles(ImportGraph(graph.modules, [imp for imp in graph.imports if not imp.type_only]))


@pytest.fixture(scope="module")
def loom_graph() -> ImportGraph:
    graph = read_package(LOOM)
    assert len(graph.modules) > 80 and len(graph.imports) > 500, "the loom tree was not read"
    return graph


def test_layer_rules_hold(loom_graph: ImportGraph) -> None:
    assert layer_violations(loom_graph) == []


def test_no_import_cycles(loom_graph: ImportGraph) -> None:
    cycles = runtime_cycles(loom_graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# ----------------------------------------------------------------------------- self-check
_BAD_TREE = {
    "__init__.py": "",
    "errors.py": "",
    "ops/__init__.py": "",
    "ops/clean.py": "import math\nimport numpy as np\nfrom loom.errors import x\nfrom loom.backend import y\n",
    "ops/bad.py": "from loom.nn import network\n",
    "backend/__init__.py": "import cupy\n",
    "backend/bad.py": "from ..ops import clean\n",
    "nn/__init__.py": "",
    "nn/network.py": "def deferred():\n    from loom.llm import model\n",
    "nn/gpu.py": "import importlib\nmod = importlib.import_module('cupyx.scipy')\n",
    "nn/first.py": "from loom.nn import second\n",
    "nn/second.py": "def later():\n    import loom.nn.first\n",
    "nn/typed.py": "from loom.nn import annotated\n",
    "nn/annotated.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loom.nn.typed import T\n",
    "llm/__init__.py": "",
    "llm/model.py": "from .. import nn\n",
    "llm/kernels.py": "import cupy as cp\n",
}


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "loom" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "loom"


def test_self_check_reports_every_planted_violation(tmp_path: Path) -> None:
    graph = read_package(_write_tree(tmp_path, _BAD_TREE))
    found = "\n".join(layer_violations(graph))
    expected = [
        "loom.ops.bad imports loom.nn.network (loom.ops may import only",
        "loom.backend.bad imports loom.ops.clean (loom.backend may import only",
        "loom.nn.network imports loom.llm.model (loom.nn must not import loom.llm)",  # inside a function
        "loom.llm.model imports loom.nn (loom.llm must not import loom.nn)",  # relative import
        "loom.llm.kernels imports cupy (only loom.backend imports cupy/cupyx)",
        "loom.nn.gpu imports cupyx.scipy (only loom.backend imports cupy/cupyx)",  # importlib.import_module
    ]
    for line in expected:
        assert line in found, f"not reported: {line}\n--- report:\n{found}"
    assert "loom.ops.clean" not in found.replace("imports loom.ops.clean", "")  # allowed imports pass
    assert "backend/__init__.py" not in found  # loom.backend may import cupy
    assert len(found.splitlines()) == len(expected)
    # first -> second at module level, second -> first inside a function: a cycle;
    # typed -> annotated -> typed only under TYPE_CHECKING: not one
    assert runtime_cycles(graph) == [["loom.nn.first", "loom.nn.second", "loom.nn.first"]]


def test_self_check_adding_a_forbidden_import_to_the_real_tree_fails(tmp_path: Path, loom_graph: ImportGraph) -> None:
    """A copy of loom's own ops package plus one forbidden import is rejected (and the copy alone is clean)."""
    files = {"__init__.py": "", "errors.py": "", "backend/__init__.py": ""}
    files |= {f"ops/{p.name}": p.read_text(encoding="utf-8") for p in (LOOM / "ops").glob("*.py")}
    assert layer_violations(read_package(_write_tree(tmp_path / "clean", files))) == []
    files["ops/dense.py"] += "\nfrom loom.nn.network import Network\n"
    found = layer_violations(read_package(_write_tree(tmp_path / "dirty", files)))
    assert len(found) == 1 and "loom.ops.dense imports loom.nn.network" in found[0]
