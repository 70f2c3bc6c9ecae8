"""The two pages in a real browser: headless Debian chromium driven by Playwright against ``loom serve``.

Lab: the grid-scatter preset trains 800 epochs with the loss chart growing while it streams,
final loss < 0.01, four ✓, save to localStorage, reload, load back, the same predictions;
invalid JSON and a bad config show loom's error with its path. Generate: 20 tokens stream in
with tokens/s > 0; Stop ends the generation on the server. Screenshots of both pages are saved
as artifacts and checked to be real renders (PNG of the viewport's size, not blank).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from loom.cli import GRID_SCATTER_CONFIG

VIEWPORT = (1280, 900)
TIMEOUT_MS = 120_000

RECORD_ATTRIBUTE = """([selector, attribute]) => {
  const node = document.querySelector(selector);
  window.__seen = [];
  // one record per change (a callback may carry several): each record's old value, then the last value
  new MutationObserver((records) => {
    for (const r of records) window.__seen.push(r.oldValue);
    window.__seen.push(node.getAttribute(attribute));
  }).observe(node, {attributes: true, attributeFilter: [attribute], attributeOldValue: true});
}"""

RECORD_TEXT = """(selector) => {
  const node = document.querySelector(selector);
  window.__seen = [];
  // textContent = ... replaces the text node: every change is one record with the new node
  new MutationObserver((records) => {
    for (const r of records) for (const added of r.addedNodes) window.__seen.push(added.textContent);
  }).observe(node, {childList: true});
}"""

IMAGE_STATS = """async (dataUrl) => {
  const image = new Image();
  image.src = dataUrl;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, sumSq = 0, n = 0;
  const colors = new Set();
  for (let i = 0; i < pixels.length; i += 4) {
    const gray = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
    sum += gray; sumSq += gray * gray; n += 1;
    if (i % 64 === 0) colors.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
  }
  const mean = sum / n;
  const std = Math.sqrt(sumSq / n - mean * mean);
  return {width: canvas.width, height: canvas.height, mean, std, colors: colors.size};
}"""


def last_number(text: str) -> float:
    numbers = re.findall(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)
    assert numbers, f"no number in {text!r}"
    return float(numbers[-1])


def check_screenshot(path: Path, context) -> dict:
    """A real render: a PNG of the viewport's size whose pixels vary (not blank, not one color)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == VIEWPORT
    page = context.new_page()  # decode it with the browser (about:blank has no CSP)
    try:
        stats = page.evaluate(IMAGE_STATS, "data:image/png;base64," + base64.b64encode(data).decode())
    finally:
        page.close()
    assert (stats["width"], stats["height"]) == VIEWPORT
    assert stats["std"] > 20, stats  # text, panels, chart: far from a flat image
    assert stats["colors"] > 50, stats
    return stats


@pytest.fixture
def page(browser_context, server):
    page = browser_context.new_page()
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith((server.url, "data:")) else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not external, f"the page requested something outside loom serve: {external}"
    assert not errors, f"JavaScript errors: {errors}"


def test_network_lab(page, server, browser_context, artifacts) -> None:
    page.goto(server.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    assert json.loads(page.get_by_test_id("config-editor").input_value()) == GRID_SCATTER_CONFIG
    presets = page.get_by_test_id("preset").locator("option").all_inner_texts()
    assert len(presets) == 4 and presets[0].startswith("Grid Scatter")
    assert page.get_by_test_id("optimizer").locator("option").all_inner_texts() == [
        "sgd",
        "adam",
        "adamw",
        "rmsprop",
        "momentum",
    ]

    # train the preset: 800 epochs streamed into the chart
    page.get_by_test_id("epochs").fill("800")
    page.get_by_test_id("learning-rate").fill("0.15")
    page.evaluate(RECORD_ATTRIBUTE, ["[data-testid=loss-chart]", "data-points"])
    page.get_by_test_id("train").click()
    expect(page.get_by_test_id("train-status")).to_have_text(re.compile(r"^trained 800 epochs"), timeout=TIMEOUT_MS)
    sizes = [int(v) for v in page.evaluate("() => window.__seen") if v is not None]
    growth = [s for s in sizes if s > 0]
    assert growth[-1] == 800 and growth == sorted(growth), sizes
    assert len({s for s in growth if 0 < s < 800}) >= 5, f"the chart did not grow while training: {sizes}"
    assert page.locator("[data-testid=loss-chart] polyline").count() == 1
    final_loss = last_number(page.get_by_test_id("final-loss").inner_text())
    assert final_loss < 0.01
    rows = page.get_by_test_id("predictions").locator("tr")
    assert rows.count() == 4
    assert all("✓" in text and "✗" not in text for text in rows.all_inner_texts())
    assert last_number(page.get_by_test_id("quality-score").inner_text().split("/100")[0]) > 90
    methods = page.get_by_test_id("methods").locator("li").all_inner_texts()
    assert len(methods) > 40 and any(m.startswith("ForwardCPU(") for m in methods)
    diagram = page.get_by_test_id("network-diagram")
    assert diagram.locator("g.layer").count() == 8 and diagram.locator("g.scatter-cell").count() == 3
    assert diagram.locator("g.layer[data-type=lstm]").count() == 1
    assert page.get_by_test_id("layer-table").locator("tbody tr").count() == 8
    shot = artifacts / "serve-lab.png"
    page.screenshot(path=str(shot))
    check_screenshot(shot, browser_context)
    page.screenshot(path=str(artifacts / "serve-lab-full.png"), full_page=True)  # with the diagram, for the README

    # save to localStorage, reload, load back: the same predictions from the loaded weights
    trained = rows.all_inner_texts()
    page.get_by_test_id("save-local").click()
    expect(page.get_by_test_id("storage-status")).to_have_text(re.compile("^saved"), timeout=TIMEOUT_MS)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    assert page.get_by_test_id("predictions").locator("tr").all_inner_texts() != trained  # a fresh network
    page.get_by_test_id("load-local").click()
    expect(page.get_by_test_id("storage-status")).to_have_text(re.compile("^loaded"), timeout=TIMEOUT_MS)
    assert page.get_by_test_id("predictions").locator("tr").all_inner_texts() == trained
    expect(page.get_by_test_id("error")).to_be_hidden()

    # download the bundle file, re-initialise, upload it: the same predictions again
    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    bundle_path = artifacts / "loom-model.json"
    download_info.value.save_as(bundle_path)
    assert json.loads(bundle_path.read_text())["type"] == "modelhost/bundle"
    page.get_by_test_id("build").click()
    expect(page.get_by_test_id("predictions").locator("tr").first).not_to_have_text(trained[0], timeout=TIMEOUT_MS)
    page.get_by_test_id("upload").set_input_files(str(bundle_path))
    expect(page.get_by_test_id("storage-status")).to_have_text("loaded loom-model.json", timeout=TIMEOUT_MS)
    assert page.get_by_test_id("predictions").locator("tr").all_inner_texts() == trained

    # invalid JSON, then a bad value: loom's message with its path, never a stack trace
    page.get_by_test_id("config-editor").fill('{"grid_rows": 1, "layers": [')
    page.get_by_test_id("build").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("ConfigError")
    expect(error).to_contain_text("invalid JSON")
    bad = json.loads(json.dumps(GRID_SCATTER_CONFIG))
    bad["layers"][1]["combine_mode"] = "mix"
    page.get_by_test_id("config-editor").fill(json.dumps(bad, indent=2))
    page.get_by_test_id("train").click()
    expect(error).to_contain_text("unknown combine mode 'mix'")
    expect(error.locator("code")).to_have_text("layers[1].combine_mode")
    assert "Traceback" not in error.inner_text()


def test_stop_button_stops_training_on_the_server(page, server) -> None:
    page.goto(server.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    page.get_by_test_id("epochs").fill("1000000")
    page.get_by_test_id("train").click()
    expect(page.get_by_test_id("train-status")).to_have_text(re.compile(r"^epoch \d+/1000000"), timeout=TIMEOUT_MS)
    assert server.status()["lab"]["training"] >= 1
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("train-status")).to_have_text(re.compile(r"^stopped after \d+ epochs"), timeout=30_000)
    deadline = time.monotonic() + 10
    while server.status()["lab"]["training"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.status()["lab"]["training"] == 0
    expect(page.get_by_test_id("train")).to_be_enabled()


def test_text_generation(page, llm_server, browser_context, artifacts) -> None:
    page.goto(llm_server.url + "generate")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    page.get_by_test_id("prompt").fill("Once upon a time")
    page.get_by_test_id("max-tokens").fill("20")
    page.get_by_test_id("temperature").fill("0")
    assert not page.get_by_test_id("chat").is_checked()
    page.evaluate(RECORD_TEXT, "[data-testid=token-count]")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("status")).to_have_text(re.compile(r"^done: 20 tokens"), timeout=TIMEOUT_MS)
    counts = [int(last_number(t)) for t in page.evaluate("() => window.__seen")]
    assert counts[-1] == 20 and len({c for c in counts if 0 < c < 20}) >= 5, f"tokens did not stream: {counts}"
    assert last_number(page.get_by_test_id("tokens-per-second").inner_text()) > 0
    assert last_number(page.get_by_test_id("elapsed").inner_text()) > 0
    output = page.get_by_test_id("output").inner_text()
    assert output.startswith("Once upon a time") and len(output) > len("Once upon a time") + 20
    shot = artifacts / "serve-generate.png"
    page.screenshot(path=str(shot))
    check_screenshot(shot, browser_context)

    # chat mode streams too; Stop ends a long generation on the server
    before = llm_server.status()["model"]
    page.get_by_test_id("prompt").fill("1, 2, 3, 4, 5, 6, 7, 8,")
    page.get_by_test_id("max-tokens").fill("2000")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("token-count")).to_have_text(re.compile(r"Tokens: ([3-9]|\d\d+)$"), timeout=TIMEOUT_MS)
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("status")).to_have_text("stopped")
    deadline = time.monotonic() + 10
    while llm_server.status()["model"]["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = llm_server.status()["model"]
    assert not after["busy"] and after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 2000
