"""LOOM bundle format: Go number formatting, atomic writes, malformed files."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

import loom
from loom.errors import ModelFormatError
from loom.nn.gojson import dumps, format_float32

CONFIG = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [
        {"type": "dense", "input_size": 3, "output_size": 2, "activation": "leaky_relu"},
        {"type": "dense", "input_size": 2, "output_size": 1, "activation": "linear"},
    ],
}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1"),
        (-2.0, "-2"),
        (0.0, "0"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-8, "1.5e-8"),
        (-3.2e-7, "-3.2e-7"),
        (1e21, "1e+21"),
        (123456.7, "123456.7"),
        (1.1, "1.1"),
        (3.4028234663852886e38, "3.4028235e+38"),
        (1e-10, "1e-10"),
    ],
)
def test_go_float32_formatting(value, text):
    assert format_float32(value) == text
    assert np.float32(text) == np.float32(value)


def test_go_json_layout_and_html_escaping():
    assert dumps({"a": [1, 2], "b": {}, "c": "<&>"}, indent="  ") == (
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": {},\n  "c": "\\u003c\\u0026\\u003e"\n}'
    )


def test_save_writes_go_layout_and_loads_back(tmp_path, backend):
    net = loom.create_network_from_json(CONFIG, backend=backend, seed=5)
    path = tmp_path / "sub" / "model.json"
    net.save_model(path, "m1")
    text = path.read_text()
    assert text == net.save_model_to_string("m1")
    bundle = json.loads(text)
    assert list(bundle) == ["type", "version", "models"]
    cfg = bundle["models"][0]["cfg"]
    assert list(cfg) == ["id", "batch_size", "grid_rows", "grid_cols", "layers_per_cell", "layers"]
    assert cfg["layers"][0] == {
        "type": "dense",
        "activation": "leaky_relu",
        "width": 1,
        "height": 1,
        "input_height": 3,
        "output_height": 2,
    }
    assert cfg["layers"][1]["activation"] == "linear"
    blob = json.loads(base64.b64decode(bundle["models"][0]["weights"]["data"]))
    assert blob["type"] == "float32" and list(blob["layers"][0]) == ["biases", "kernel"]
    loaded = loom.load_model(path, "m1", backend=backend)
    x = [0.3, -0.1, 0.9]
    np.testing.assert_array_equal(loom.to_numpy(loaded.forward(x)), loom.to_numpy(net.forward(x)))
    assert loaded.layers[1].activation == loom.Activation.LINEAR
    assert [p.name for p in path.parent.iterdir()] == ["model.json"]  # no temp files left


def test_failed_save_leaves_the_old_file(tmp_path, backend):
    net = loom.create_network_from_json(CONFIG, backend=backend, seed=5)
    path = tmp_path / "model.json"
    net.save_model(path, "m")
    before = path.read_text()
    net.layers[0].params["kernel"][0, 0] = float("nan")
    with pytest.raises(ModelFormatError, match=r"layers\[0\]: weights.kernel contains NaN or Inf"):
        net.save_model(path, "m")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def _bundle(net, **changes):
    bundle = json.loads(net.save_model_to_string("m"))
    model = bundle["models"][0]
    for key, value in changes.items():
        if key == "type":
            bundle["type"] = value
        elif key == "data":
            model["weights"]["data"] = value
        elif key == "layers":
            model["cfg"]["layers"] = value
    return json.dumps(bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "something/else"}, r"invalid bundle type 'something/else'"),
        ({"data": "@@not base64@@"}, r"failed to decode weights"),
        (
            {"data": base64.b64encode(b'{"type":"float32","layers":[]}').decode()},
            r"layer count mismatch: config=2, weights=0",
        ),
        (
            {"data": base64.b64encode(b'{"type":"float32","layers":[{"kernel":[1,2],"biases":[0,0]},{}]}').decode()},
            r"layers\[0\]: weights.kernel: expected 6 values for shape \[3, 2\], got 2",
        ),
    ],
)
def test_malformed_bundles_raise_model_format_error(change, message):
    net = loom.create_network_from_json(CONFIG, seed=1)
    with pytest.raises(ModelFormatError, match=message):
        loom.load_model_from_string(_bundle(net, **change), "m")


def test_missing_model_id_and_bad_json_and_missing_file(tmp_path):
    net = loom.create_network_from_json(CONFIG, seed=1)
    with pytest.raises(ModelFormatError, match=r"model 'other' not found in bundle \(available: \['m'\]\)"):
        loom.load_model_from_string(net.save_model_to_string("m"), "other")
    with pytest.raises(ModelFormatError, match="failed to parse JSON"):
        loom.load_model_from_string("{", "m")
    with pytest.raises(ModelFormatError, match="cannot read model file"):
        loom.load_model(tmp_path / "absent.json", "m")


def test_bundle_with_unknown_layer_type_is_a_model_format_error():
    net = loom.create_network_from_json(CONFIG, seed=1)
    layers = json.loads(net.save_model_to_string("m"))["models"][0]["cfg"]["layers"]
    layers[0]["type"] = "quantum"
    with pytest.raises(ModelFormatError, match=r"unknown layer type 'quantum'"):
        loom.load_model_from_string(_bundle(net, layers=layers), "m")
