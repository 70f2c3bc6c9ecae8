"""``docs/porting-from-loom.md`` covers every name the LOOM README and the welvet spec call, and each resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import loom
from loom import compat
from loom.compat import welvet

DOC = Path(__file__).resolve().parents[1] / "docs" / "porting-from-loom.md"

#: Names the README calls that are JavaScript / Go built-ins or the README's own placeholders.
NOT_LOOM = {
    "Array", "JSON.parse", "JSON.stringify", "Math.pow", "Math.random", "Uint8Array", "arrayBuffer", "await",
    "console.log", "fetch", "fill", "for", "if", "join", "map", "toFixed", "localStorage", "localStorage.getItem",
    "localStorage.setItem", "js.FuncOf", "reflect.ValueOf", "generateTrainingData",  # the README's "Your data"
    # receivers and words of prose code spans (``output (x)``), not calls of an API:
    "array", "data", "input", "loss", "network", "output", "results", "saved", "time", "training", "weights",
}  # fmt: skip
#: Placeholders and Go internals the README names: documented, not callable under that name.
DOCUMENTED_ONLY = {"MethodName", "LayerType", "ActivationType", "methodWrapper", "convertParameter", "serializeResults"}
RECEIVERS = ("network.", "loadedNetwork.", "agentNetwork.")


def readme_called_names(readme: str) -> set[str]:
    """Identifiers called in the README's JavaScript blocks and in its inline code (``Name(``)."""
    names: set[str] = set()
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", readme, re.S):
        if lang in ("javascript", "js"):
            names.update(m.group(1) for m in re.finditer(r"([A-Za-z_][\w.]*)\s*\(", body))
    names.update(re.findall(r"`([A-Za-z_][\w.]*)\(", readme))
    names.update(re.findall(r"`(\w+)`\s*\(", readme))  # `methodWrapper` (...) style mentions
    out = set()
    for name in names:
        for receiver in RECEIVERS:
            if name.startswith(receiver):
                name = name[len(receiver) :]
        if "." in name and name not in NOT_LOOM:
            name = name.rsplit(".", 1)[-1]  # x.forEach / method.returns.join -> forEach / join
        out.add(name)
    return {n for n in out if n not in NOT_LOOM and n not in {"forEach", "reduce", "slice"}}


def resolves(name: str) -> bool:
    if hasattr(loom, name) or hasattr(compat, name):
        return True
    return loom.Network.has_method(loom.new_network(1, 1, 1, 1), name)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_readme_name_is_in_the_doc_and_resolves(shared_dir, doc):
    readme = (shared_dir / "seed" / "LOOM_WASM_README.md").read_text(encoding="utf-8")
    names = readme_called_names(readme)
    assert {"createNetworkFromJSON", "createLoomNetwork", "CallLayerInit", "GenerateText", "SetLayer"} <= names
    missing_in_doc = sorted(n for n in names if f"`{n}" not in doc and f"{n}(" not in doc and f".{n}" not in doc)
    assert not missing_in_doc, missing_in_doc
    unresolved = sorted(n for n in names - DOCUMENTED_ONLY if not resolves(n))
    assert not unresolved, unresolved


def test_every_welvet_name_and_c_symbol_is_in_the_doc(shared_dir, doc):
    binding = (shared_dir / "spec" / "python-binding.md").read_text(encoding="utf-8")
    exported = re.search(r"## 1\. Exported names.*?```\n(.*?)```", binding, re.S).group(1)
    welvet_names = {n.strip() for n in exported.replace("\n", " ").split(",") if n.strip()}
    assert len(welvet_names) > 30
    for name in welvet_names:
        assert hasattr(welvet, name), name
        assert f"`{name}" in doc, name
    c_symbols = set(re.findall(r"`(Loom\w*|CreateLoomNetwork)\b", binding))
    assert {"LoomForward", "LoomTrain", "Loom_NewNetwork", "CreateLoomNetwork"} <= c_symbols
    assert not sorted(s for s in c_symbols if s not in doc)


def test_every_go_network_method_is_in_the_doc(shared_dir, doc):
    spec = (shared_dir / "spec" / "introspection.md").read_text(encoding="utf-8")
    methods = re.findall(r"^\| \d+ \| (\w+) \|", spec, re.M)
    assert len(methods) == 27
    net = loom.new_network(1, 1, 1, 1)
    for name in methods:
        assert f"`{name}(" in doc, name
        assert net.has_method(name), name


def test_the_doc_links_the_differences():
    text = DOC.read_text(encoding="utf-8")
    assert "](differences-from-go.md)" in text
    assert (DOC.parent / "differences-from-go.md").is_file()
