"""loom.compat: LOOM's JSON calling convention, its error shapes, and the native names' JSON guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

import loom
from loom import compat
from loom.compat import ErrorText, JSONCallError
from loom.demo_data import GRID_SCATTER_BATCHES as BATCHES  # the LOOM README's values, verbatim
from loom.demo_data import GRID_SCATTER_CONFIG as GRID_SCATTER
from loom.errors import ConfigError, ModelFormatError, ShapeError

TRAINING = {
    "Epochs": 40,
    "LearningRate": 0.15,
    "UseGPU": False,
    "PrintEveryBatch": 0,
    "GradientClip": 1.0,
    "LossType": "mse",
    "Verbose": False,
}
SMALL = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [
        {"type": "dense", "input_size": 4, "output_size": 3, "activation": "tanh"},
        {"type": "dense", "input_size": 3, "output_size": 2, "activation": "sigmoid"},
    ],
}


# ----------------------------------------------------------------------------- the README's Simple API
def test_simple_api_block_gives_the_pythonic_numbers_and_reloads_bit_for_bit(backend):
    x = [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]
    network = compat.createNetworkFromJSON(json.dumps(GRID_SCATTER), seed=5, backend=backend)
    [result] = json.loads(network.Train(json.dumps([BATCHES, TRAINING])))
    output, duration_ns = json.loads(network.ForwardCPU(json.dumps([x])))
    [metrics] = json.loads(network.EvaluateNetwork(json.dumps([[b["Input"] for b in BATCHES], [0, 1, 1, 0]])))
    [model_json] = json.loads(network.SaveModelToString(json.dumps(["my_model"])))
    loaded = compat.loadLoomNetwork(model_json, "my_model")
    output2, _ = json.loads(loaded.ForwardCPU(json.dumps([x])))

    native = loom.create_network_from_json(GRID_SCATTER, seed=5, backend=backend)
    expected = native.train(BATCHES, TRAINING)
    assert result == {**expected.to_dict(), "TotalTime": result["TotalTime"], "AvgThroughput": result["AvgThroughput"]}
    assert output == loom.to_numpy(native.forward(x)).tolist()
    assert isinstance(duration_ns, int) and duration_ns > 0
    assert metrics["score"] == native.evaluate_network([b["Input"] for b in BATCHES], [0, 1, 1, 0]).score
    assert output2 == output  # bit for bit: the JSON floats are the exact float32 values
    assert json.loads(model_json)["models"][0]["id"] == "my_model"
    assert result["LossHistory"][-1] < result["LossHistory"][0]


def test_create_loom_network_takes_a_config_or_a_saved_bundle():
    network = compat.createLoomNetwork(json.dumps(SMALL), seed=1)
    [bundle] = json.loads(network.SaveModelToString(json.dumps(["m"])))
    again = compat.createLoomNetwork(bundle)
    x = json.dumps([[0.1, 0.2, 0.3, 0.4]])
    assert json.loads(again.ForwardCPU(x))[0] == json.loads(network.ForwardCPU(x))[0]
    same = compat.LoadModelFromString(bundle, "m")
    assert json.loads(same.ForwardCPU(x))[0] == json.loads(network.ForwardCPU(x))[0]


def test_results_are_the_json_of_the_result_list():
    network = compat.createNetworkFromJSON(json.dumps(SMALL), seed=0)
    assert network.ZeroGradients() == "[]"  # no results
    assert json.loads(network.TotalLayers()) == [2]
    assert json.loads(network.HasMethod(json.dumps(["ForwardCPU"]))) == [True]
    [names] = json.loads(network.ListMethods())
    assert names == network.native.list_methods() and "ForwardCPU" in names
    [text] = json.loads(network.GetMethodsJSON())
    assert json.loads(text) == network.native.get_methods()
    [info] = json.loads(network.LoadModelFromString(json.dumps([network.native.save_model_to_string("x"), "x"])))
    assert info == {"batch_size": 1, "grid_cols": 1, "grid_rows": 1, "layers_per_cell": 2, "total_layers": 2}
    [layer] = json.loads(network.GetLayer(json.dumps([0, 0, 1])))
    assert (layer["Type"], layer["Activation"], layer["InputHeight"], layer["OutputHeight"]) == (0, 1, 3, 2)
    assert len(layer["Kernel"]) == 6 and len(layer["Bias"]) == 2


def test_a_new_network_method_is_bridged_without_new_code():
    class Extended(loom.Network):
        def Scaled(self, x: list[float], factor: float) -> list[float]:
            return [v * factor for v in x]

    net = Extended(1, 1, 1, [loom.init_dense_layer(2, 1, 1, seed=0)])
    wrapped = compat.wrap(net)
    assert json.loads(wrapped.Scaled(json.dumps([[1, 2], 3]))) == [[3.0, 6.0]]
    assert wrapped.Scaled(json.dumps([[1, "a"], 3])) == "Scaled: parameter 0 (x)[1]: expected float, got string"
    assert "Scaled" in dir(wrapped)


# ----------------------------------------------------------------------------- error shapes
@pytest.fixture
def small():
    return compat.createNetworkFromJSON(json.dumps(SMALL), seed=0)


@pytest.mark.parametrize(
    ("method", "argument", "expected"),
    [
        ("ForwardCPU", None, r"^No arguments provided: ForwardCPU\(x\) expects 1 parameter"),
        ("ForwardCPU", "", r"^No arguments provided: "),
        ("ForwardCPU", "[[0.1, 0.2]", r"^Invalid JSON input: ForwardCPU: Expecting "),
        ("ForwardCPU", '{"x": 1}', r"^Invalid JSON input: ForwardCPU expects a JSON array of its arguments \['x'\]"),
        ("ForwardCPU", "[[1, 2, 3, 4], 5]", r"^Expected 1 parameters, got 2: ForwardCPU\(x\): 1 extra argument"),
        ("SetLayer", "[0, 0, 1]", r"^Expected 4 parameters, got 3: SetLayer\(row, col, layer, cfg\): missing cfg$"),
        ("Train", "[]", r"^Expected 1 to 2 parameters, got 0: Train\(batches, config\): missing batches$"),
        ("SetLayer", '["0", 0, 1, {}]', r"^SetLayer: parameter 0 \(row\): expected int, got string$"),
        ("UpdateWeights", "[true]", r"^UpdateWeights: parameter 0 \(learning_rate\): expected float, got boolean$"),
        ("ForwardCPU", '[[1, 2, "x", 4]]', r"^ForwardCPU: parameter 0 \(x\)\[2\]: expected float, got string$"),
        ("SaveModelToString", "[7]", r"^SaveModelToString: parameter 0 \(model_id\): expected str, got number$"),
        ("ForwardCPU", "[[1, 2, 3]]", r"^Error: ForwardCPU: ShapeError: layers\[0\] \(dense\): expected 4 input"),
        ("Train", '[[{"Input": [1, 2, 3, 4], "Target": [1, 0]}], {"Epohcs": 1}]', r"^Error: Train: ConfigError: .*"),
    ],
)
def test_error_texts_name_the_method_and_parameter(small, method, argument, expected):
    result = getattr(small, method)(argument)
    assert isinstance(result, ErrorText)
    assert isinstance(result.exception, loom.errors.LoomError)
    assert result.__class__.__mro__[1] is str
    with pytest.raises(json.JSONDecodeError):
        json.loads(result)
    import re

    assert re.search(expected, result), result


def test_non_finite_results_cannot_be_marshalled(small):
    net = small.native
    net.layers[1].params["biases"][...] = np.nan
    result = small.ForwardCPU(json.dumps([[1, 2, 3, 4]]))
    assert result.startswith("Failed to marshal results: ForwardCPU: unsupported value")
    assert isinstance(result.exception, ModelFormatError)


def test_python_values_instead_of_json_text_are_explained(small):
    result = small.ForwardCPU([[1, 2, 3, 4]])
    assert result.startswith("Invalid JSON input: ForwardCPU takes the JSON text of its argument list (a string)")


def test_a_bare_name_is_accepted_for_one_text_parameter(small):
    assert json.loads(small.HasMethod("ForwardCPU")) == [True]  # the README writes HasMethod("ForwardCPU")
    assert json.loads(small.GetMethodSignature("TotalLayers")) == ["TotalLayers() -> int"]
    assert small.GetMethodSignature("Nope") == "Error: GetMethodSignature: LoomError: method Nope not found"
    [bundle] = json.loads(small.SaveModelToString("my_model"))
    assert json.loads(bundle)["models"][0]["id"] == "my_model"
    assert small.SetLayer("row").startswith("Invalid JSON input: SetLayer: Expecting value")


def test_unknown_methods_are_attribute_errors(small):
    with pytest.raises(AttributeError, match="no method 'Forward'; ListMethods"):
        _ = small.Forward


def test_raise_mode_raises_the_loom_exceptions(small):
    with compat.error_mode("raise"):
        with pytest.raises(JSONCallError, match=r"Expected 4 parameters, got 3"):
            small.SetLayer("[0, 0, 1]")
        with pytest.raises(ShapeError, match="expected 4 input values"):
            small.ForwardCPU("[[1, 2, 3]]")
        with pytest.raises(ConfigError, match=r"invalid JSON"):
            compat.createNetworkFromJSON("{nope")
    assert compat.get_error_mode() == "return"
    strict = compat.wrap(small.native, errors="raise")
    with pytest.raises(JSONCallError, match="Invalid JSON input"):
        strict.ForwardCPU("[")
    with pytest.raises(ConfigError, match="error mode"):
        compat.set_error_mode("loud")


def test_factory_errors_have_the_wasm_prefixes():
    bad = compat.createNetworkFromJSON(json.dumps({**SMALL, "layers_per_cell": 3}))
    assert bad.startswith("Error: failed to create network: ") and "layer count mismatch" in bad
    missing = compat.loadLoomNetwork("{}", "m")
    assert missing.startswith("Error: failed to load network: ") and isinstance(missing.exception, ModelFormatError)
    assert compat.NewNetwork("784", 1, 1, 2).startswith("Error: failed to create network: NewNetwork: input_size")


# ----------------------------------------------------------------------------- registry functions
def test_creating_networks_from_scratch_as_the_readme_writes_it():
    network = compat.NewNetwork(784, 1, 1, 2)
    layer0_config = compat.CallLayerInit("InitDenseLayer", json.dumps([784, 392, 0]))
    layer1_config = compat.CallLayerInit("InitDenseLayer", json.dumps([392, 10, 1]))
    assert network.SetLayer(json.dumps([0, 0, 0, json.loads(layer0_config)])) == "[]"
    assert network.SetLayer(json.dumps([0, 0, 1, json.loads(layer1_config)])) == "[]"
    layer0 = network.native.get_layer(0, 0, 0)
    kernel = np.asarray(json.loads(layer0_config)["Kernel"], dtype=np.float32).reshape(784, 392)
    np.testing.assert_array_equal(loom.to_numpy(layer0.params["kernel"]), kernel)
    assert abs(float(kernel.std()) - np.sqrt(2 / 784)) < 0.002  # the registry's He initialisation
    output, _ = json.loads(network.ForwardCPU(json.dumps([[0.5] * 784])))
    assert len(output) == 10 and all(0 < v < 1 for v in output)


def test_init_functions_return_layer_config_json():
    dense = json.loads(compat.InitDenseLayer(784, 128, 0))
    assert (dense["Type"], dense["Activation"], dense["InputHeight"], dense["OutputHeight"]) == (0, 0, 784, 128)
    assert len(dense["Kernel"]) == 784 * 128 and dense["Bias"] == [0.0] * 128
    mha = json.loads(compat.InitMultiHeadAttentionLayer(512, 8, 32, 256))  # dModel, numHeads, batchSize, seqLength
    assert (mha["Type"], mha["DModel"], mha["NumHeads"], mha["HeadDim"], mha["SeqLength"]) == (2, 512, 8, 64, 256)
    assert len(mha["QWeights"]) == 512 * 512
    grid = json.loads(compat.InitGridSoftmaxLayer(3, 4))
    assert (grid["Type"], grid["SoftmaxVariant"], grid["SoftmaxRows"], grid["SoftmaxCols"]) == (5, 1, 3, 4)
    assert compat.InitDenseLayer(4, 2, "nope").startswith("Error: InitDenseLayer: ConfigError: activation")
    entries = json.loads(compat.ListLayerInitFunctions())
    assert [e["Name"] for e in entries] == sorted(e["Name"] for e in entries)
    dense_entry = next(e for e in entries if e["Name"] == "InitDenseLayer")
    assert dense_entry["NumArgs"] == 3 and dense_entry["ArgNames"] == ["input_size", "output_size", "activation"]
    for name in dense_entry, *entries:
        assert hasattr(compat, name["Name"]) and hasattr(loom, name["Name"])


def test_call_layer_init_errors_name_the_function_and_parameter():
    assert compat.CallLayerInit("InitDenseLayer", "[784]") == (
        "Expected 2 to 3 parameters, got 1: InitDenseLayer(input_size, output_size, activation): missing output_size"
    )
    assert compat.CallLayerInit("InitDenseLayer", '["a", 3]') == (
        "InitDenseLayer: parameter 0 (input_size): expected int, got string"
    )
    assert compat.CallLayerInit("InitFoo", "[]").startswith("Error: layer init function 'InitFoo' not found")
    assert json.loads(compat.CallLayerInit("InitDenseLayer", [3, 2]))["OutputHeight"] == 2


# ----------------------------------------------------------------------------- LayerConfig JSON
LAYER_CASES = [
    loom.init_dense_layer(5, 3, "gelu", seed=1),
    loom.init_conv2d_layer(4, 4, 2, 3, 1, 1, 2, 2, seed=1),
    loom.init_multi_head_attention_layer(8, 2, 3, 1, seed=1),
    loom.init_rnn_layer(5, 4, seed=1),
    loom.init_lstm_layer(5, 4, seed=1),
    loom.init_layer_norm_layer(5),
    loom.init_rms_norm_layer(5),
    loom.init_swiglu_layer(5, 7, seed=1),
    loom.init_masked_softmax_layer(5),
    loom.init_hierarchical_softmax_layer([5, 1]),
    loom.init_entmax_layer(1.5),
]


@pytest.mark.parametrize("cfg", LAYER_CASES, ids=lambda c: c.type + "-" + c.softmax_variant)
def test_layer_config_json_round_trips_every_layer_type(cfg):
    text = json.dumps(compat.layer_config_to_json(cfg))
    back = compat.layer_config_from_json(json.loads(text))
    assert back.type == cfg.type and back.activation == cfg.activation
    for key in ("input_size", "output_size", "d_model", "num_heads", "hidden_size", "norm_size", "softmax_variant"):
        assert getattr(back, key) == getattr(cfg, key), key
    assert back.mask == cfg.mask and back.hierarchy_levels == cfg.hierarchy_levels
    assert set(back.params) == set(cfg.params)
    for name, value in cfg.params.items():
        np.testing.assert_array_equal(loom.to_numpy(back.params[name]), loom.to_numpy(value), err_msg=name)


def test_parallel_layer_json_round_trip_gives_the_same_forward():
    net = loom.create_network_from_json(GRID_SCATTER, seed=3)
    text = json.dumps(compat.layer_config_to_json(net.layers[1]))
    assert '"ParallelBranches"' in text and '"GridPositions"' in text
    other = loom.create_network_from_json(GRID_SCATTER, seed=4)
    other.set_layer(0, 1, 0, compat.layer_config_from_json(json.loads(text)))
    other.set_layer(0, 0, 0, net.layers[0].copy())
    other.set_layer(0, 2, 0, net.layers[2].copy())
    x = BATCHES[0]["Input"]
    np.testing.assert_array_equal(loom.to_numpy(other.forward(x)), loom.to_numpy(net.forward(x)))


def test_readme_type_conversion_struct_gets_its_sizes_from_the_weights():
    cfg = compat.layer_config_from_json({"Type": 0, "Activation": 1, "Kernel": [1.0, 2.0], "Bias": [0.1, 0.2]})
    assert (cfg.input_size, cfg.output_size, cfg.activation) == (1, 2, loom.Activation.SIGMOID)
    net = compat.NewNetwork(1, 1, 1, 1)
    assert net.SetLayer(json.dumps([0, 0, 0, {"Type": 0, "Activation": 1, "Kernel": [1.0, 2.0], "Bias": [0.1, 0.2]}]))
    [output, _] = json.loads(net.ForwardCPU("[[0.5]]"))
    np.testing.assert_allclose(output, 1 / (1 + np.exp(-np.array([0.6, 1.2]))), rtol=1e-6)


def test_layer_config_json_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"cfg\.Kernal: not a LayerConfig field \(did you mean 'Kernel'\?\)"):
        compat.layer_config_from_json({"Type": 0, "Kernal": [1.0]})
    with pytest.raises(ConfigError, match=r"cfg\.Type: unknown LayerType id 42"):
        compat.layer_config_from_json({"Type": 42})
    with pytest.raises(ConfigError, match=r"Kernel: expected a flat list of numbers"):
        compat.layer_config_from_json({"Type": 0, "InputHeight": 1, "OutputHeight": 1, "Kernel": ["x"], "Bias": [0]})
    with pytest.raises(ConfigError, match=r"weights: missing array 'biases'"):
        compat.layer_config_from_json({"Type": 0, "InputHeight": 1, "OutputHeight": 2, "Kernel": [1.0, 2.0]})
    loom_form = compat.layer_config_from_json({"type": "dense", "input_size": 2, "output_size": 1}, seed=0)
    assert loom_form.params["kernel"].shape == (2, 1)


# ----------------------------------------------------------------------------- native CamelCase guard
@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda n: n.ForwardCPU(json.dumps([[0.1, 0.2, 0.3, 0.4]])), "x"),
        (lambda n: n.Train(json.dumps([BATCHES, TRAINING])), "batches"),
        (lambda n: n.EvaluateNetwork(json.dumps([[[0.1] * 4], [0]])), "inputs"),
        (lambda n: n.SaveModelToString(json.dumps(["my_model"])), "model_id"),
        (lambda n: n.UpdateWeights("[0.01]"), "learning_rate"),
        (lambda n: n.SetLayer(json.dumps([0, 0, 0, {}])), "row"),
        (lambda n: n.GetMethodSignature('["ForwardCPU"]'), "name"),
    ],
)
def test_native_loom_names_reject_json_text(call, parameter):
    net = loom.create_network_from_json(SMALL, seed=0)
    with pytest.raises(ConfigError, match=rf"parameter '{parameter}' got .*this method takes Python values; for JSON"):
        call(net)
    assert net.SaveModelToString("[my model]").startswith("{")  # an id that is not JSON text is fine


def test_native_loom_functions_reject_json_text():
    with pytest.raises(ConfigError, match=r"CallLayerInit: parameter '\*args\[0\]' .*use loom.compat"):
        loom.CallLayerInit("InitDenseLayer", "[784, 392, 0]")
    with pytest.raises(ConfigError, match=r"InitDenseLayer: parameter 'input_size' got a string"):
        loom.InitDenseLayer("784", 3, 0)
    assert loom.InitDenseLayer(4, 3, "relu").output_size == 3


def test_package_root_has_the_readme_names():
    net = loom.createLoomNetwork(json.dumps(SMALL))
    bundle = net.SaveModelToString("m")
    assert isinstance(loom.createLoomNetwork(bundle), loom.Network)
    mha = loom.InitMultiHeadAttentionLayer(512, 8, 32, 256)
    assert (mha.d_model, mha.num_heads, mha.seq_length) == (512, 8, 256)
    for name in ("GenerateText", "LoadTokenizerFromBytes", "EncodeText", "DecodeTokens", "GenerateNextToken"):
        assert callable(getattr(loom, name)) and name in loom.__all__
    assert loom.compat is compat


def test_all_go_network_methods_exist_and_gpu_ones_explain_themselves(backend_name):
    go_methods = [
        *("Activations", "BackwardCPU", "BackwardGPU", "BiasGradients", "EvaluateFromCheckpointFiles"),
        *("EvaluateNetwork", "ForwardCPU", "ForwardGPU", "GetActivation", "GetLayer", "GetMethodSignature"),
        *("GetMethods", "GetMethodsJSON", "HasMethod", "InitGPU", "InitializeWeights", "KernelGradients"),
        *("ListMethods", "ReleaseGPU", "SaveModel", "SaveModelToString", "SerializeModel", "SetLayer"),
        *("TotalLayers", "Train", "UpdateWeights", "ZeroGradients"),
    ]
    net = loom.create_network_from_json(SMALL, seed=0)
    assert set(go_methods) <= set(net.ListMethods())
    if backend_name == "numpy":
        with pytest.raises(loom.errors.BackendUnavailableError, match=r"ForwardGPU: .* call InitGPU"):
            net.ForwardGPU([0.1] * 4)
    net.ForwardCPU([0.1, 0.2, 0.3, 0.4])
    net.BackwardCPU([1.0, -1.0])
    kernels, biases = net.KernelGradients(), net.BiasGradients()
    assert [len(k) for k in kernels] == [12, 6] and [len(b) for b in biases] == [3, 2]
    np.testing.assert_allclose(biases[1], loom.to_numpy(net.layers[1].grads["biases"]))
    assert net.SerializeModel("m")["id"] == "m"


def test_evaluate_from_checkpoint_files(tmp_path):
    net = loom.create_network_from_json(SMALL, seed=0)
    files = []
    for i, x in enumerate([[1, 0, 0, 0], [0, 0, 0, 1]]):
        files.append(tmp_path / f"in{i}.json")
        files[-1].write_text(json.dumps(x))
    metrics, load_ns, forward_ns = net.EvaluateFromCheckpointFiles(files, [0, 1])
    assert metrics.to_dict() == net.evaluate_network([[1, 0, 0, 0], [0, 0, 0, 1]], [0, 1]).to_dict()
    assert load_ns >= 0 and forward_ns >= 0
    with pytest.raises(ModelFormatError, match=r"missing\.json: cannot read a checkpoint input"):
        net.EvaluateFromCheckpointFiles([tmp_path / "missing.json"], [0])


# ----------------------------------------------------------------------------- introspection
def test_get_methods_json_lists_every_method_with_real_names_and_concrete_types():
    net = loom.create_network_from_json(SMALL, seed=0)
    methods = json.loads(net.GetMethodsJSON())
    assert [m["method_name"] for m in methods] == net.list_methods()
    public = sorted(n for n in dir(loom.Network) if not n.startswith("_") and callable(getattr(loom.Network, n)))
    assert [m["method_name"] for m in methods] == public
    for method in methods:
        for param in method["parameters"]:
            assert param["name"] and not param["name"].startswith("param"), method
            assert param["type"] and "Any" not in param["type"], method
        assert all("Any" not in r for r in method["returns"]), method
    by_name = {m["method_name"]: m for m in methods}
    assert by_name["Train"]["parameters"] == [
        {"name": "batches", "type": "Sequence[TrainingBatchLike]"},
        {"name": "config", "type": "TrainingConfigLike | None"},
    ]
    assert by_name["Train"]["returns"] == ["TrainingResult"]
    assert by_name["backward"]["parameters"][1] == {"name": "accumulate", "type": "bool", "keyword_only": True}
    assert by_name["SetLayer"]["parameters"][3] == {"name": "cfg", "type": "LayerConfig"}
    assert net.GetMethodSignature("save_model_to_string") == (
        "save_model_to_string(model_id: str, *, go_compatible: bool | Literal['strict', 'warn']) -> str"
    )


def test_readme_runtime_introspection_block_runs_as_written():
    network = compat.createLoomNetwork(json.dumps(SMALL), seed=0)
    methods_json = network.GetMethods()
    methods = json.loads(methods_json)
    assert len(methods) == len(network.native.list_methods())
    lines = []
    for method in methods:
        params = ", ".join(f"{p['name']}: {p['type']}" for p in method["parameters"])
        lines.append(f"{method['method_name']}({params}) -> {', '.join(method['returns'])}")
    assert "ForwardCPU(x: ArrayLike) -> tuple[list[float], int]" in lines
    assert network.HasMethod("ForwardCPU") == "[true]"
    sig = network.GetMethodSignature(json.dumps(["ForwardCPU"]))
    assert json.loads(sig) == ["ForwardCPU(x: ArrayLike) -> tuple[list[float], int]"]
    assert json.loads(network.ListMethods())[0] == [m["method_name"] for m in methods]
