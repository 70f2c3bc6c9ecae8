"""load_transformer on .gguf files: the tiny fixtures written as GGUF give the HF logits.

The GGUF files are written with the helpers of ``test_gguf.py`` (llama.cpp's
conversion: Q/K rows permuted, GPT-2 Conv1D transposed, tied GPT-2 head
duplicated), so this checks the whole path GGUF → loom.llm.gguf_file →
TransformerConfig / build_weights → forward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import reference

import loom
from loom.llm import TextGenerator, load_tokenizer, load_transformer

gguf = pytest.importorskip("gguf")
from test_gguf import write_gpt2_gguf, write_llama_gguf  # noqa: E402 - needs gguf

Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize(("name", "writer"), [("tiny-llama", write_llama_gguf), ("tiny-gpt2", write_gpt2_gguf)])
def test_gguf_f32_logits_and_greedy_match_transformers(
    name, writer, llm_fixtures: Path, tmp_path: Path, backend
) -> None:
    folder = llm_fixtures / name
    path = writer(folder, tmp_path / f"{name}.gguf", Q.F32)
    model = load_transformer(path, backend=backend)
    assert model.config.architecture == ("gpt2" if "gpt2" in name else "llama")
    for case in reference(folder)["cases"]:
        np.testing.assert_allclose(loom.to_numpy(model.logits(case["ids"])), case["logits"], rtol=0, atol=1e-4)
    case = reference(folder)["cases"][1]
    assert model.generate(case["ids"], 16, stop_ids=[]) == case["greedy_new_ids"]
    generator = TextGenerator(model, load_tokenizer(path))
    text = generator.generate_text(case["prompt"], max_tokens=16, temperature=0)
    assert text == generator.tokenizer.decode(case["greedy_new_ids"])


def test_gguf_q8_0_stays_close(llm_fixtures: Path, tmp_path: Path, backend) -> None:
    folder = llm_fixtures / "tiny-llama"
    model = load_transformer(write_llama_gguf(folder, tmp_path / "q8.gguf", Q.Q8_0), backend=backend)
    case = reference(folder)["cases"][0]
    got = loom.to_numpy(model.logits(case["ids"]))
    diff = np.abs(got - np.asarray(case["logits"]))  # 8-bit weights vs float32, logits of std ~4
    assert diff.mean() < 0.1 and diff.max() < 1.0
