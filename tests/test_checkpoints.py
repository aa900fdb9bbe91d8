"""The shared checkpoint glue: strict shapes, stated re-layouts, helpers, clear file errors."""

import json
import os
import re

import keras
import numpy as np
import pytest

from keras_bigmodels import checkpoints
from keras_bigmodels.checkpoints import WeightLoader
from keras_bigmodels.layers.attention import MultiHeadAttention
from tests.testing import to_numpy


def random(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype("float32")


def dense_layer(units, input_dim, use_bias=True):
    layer = keras.layers.Dense(units, use_bias=use_bias)
    layer.build((None, input_dim))
    return layer


def test_forgotten_transpose_fails_naming_the_weight():
    layer = dense_layer(3, 5)  # kernel [5, 3]
    torch_weight = random(3, 5)  # nn.Linear stores [out, in]
    loader = WeightLoader({"fc.weight": torch_weight})
    with pytest.raises(ValueError, match=r"(?s)`fc\.weight` has shape \(3, 5\).*\(5, 3\)"
                                         r".*transpose=True"):
        loader.assign(layer.kernel, "fc.weight")
    loader.assign(layer.kernel, "fc.weight", transpose=True)
    np.testing.assert_array_equal(to_numpy(layer.kernel), torch_weight.T)


def test_same_size_is_not_reshaped_unless_stated():
    # A [4, 6] tensor has the size of the [3, 8] kernel: it used to be reshaped silently.
    layer = dense_layer(8, 3)
    loader = WeightLoader({"w": random(4, 6)})
    with pytest.raises(ValueError, match="`w` has shape .*reshape=True"):
        loader.assign(layer.kernel, "w")
    # Sizes that differ say that the config does not match.
    loader = WeightLoader({"w": random(4, 5)})
    with pytest.raises(ValueError, match="config does not match"):
        loader.assign(layer.kernel, "w")


def test_attention_heads_are_split_as_stated():
    hidden, heads = 8, 2
    layer = MultiHeadAttention(num_heads=heads)
    x = random(2, 3, hidden, seed=1)
    layer(x, x)
    names = ("q", "k", "v", "o")
    weights = {}
    for i, name in enumerate(names):
        weights[f"{name}.weight"] = random(hidden, hidden, seed=10 + i)
        weights[f"{name}.bias"] = random(hidden, seed=20 + i)
    loader = WeightLoader(weights)
    checkpoints.attention(loader, layer, *names)
    loader.finish()
    # Our query projection equals the Linear's x @ W.T + b, split into heads.
    expected = (x @ weights["q.weight"].T + weights["q.bias"]).reshape(2, 3, heads, -1)
    np.testing.assert_allclose(to_numpy(layer.query_dense(x)), expected, atol=1e-5)
    merged = random(2, 3, heads, hidden // heads, seed=2)
    expected = merged.reshape(2, 3, hidden) @ weights["o.weight"].T + weights["o.bias"]
    np.testing.assert_allclose(to_numpy(layer.output_dense(merged)), expected, atol=1e-5)
    # Without the stated reshape the same tensor is refused, naming it.
    with pytest.raises(ValueError, match="`q.weight`"):
        WeightLoader(weights).assign(layer.query_dense.kernel, "q.weight", transpose=True)


def test_dense_conv_norm_and_embedding_helpers():
    weights = {"fc.weight": random(3, 5), "fc.bias": random(3, seed=1),
               "c1d.weight": random(5, 3, seed=2),
               "conv.weight": random(6, 2, 3, 3, seed=3), "conv.bias": random(6, seed=4),
               "ln.weight": random(5, seed=5), "ln.bias": random(5, seed=6),
               "rms.weight": random(5, seed=7), "table.weight": random(7, 5, seed=8)}
    loader = WeightLoader(weights)
    fc, no_bias = dense_layer(3, 5), dense_layer(3, 5, use_bias=False)
    checkpoints.dense(loader, fc, "fc")
    checkpoints.dense(loader, no_bias, "c1d", transpose=False)  # GPT-2's Conv1D: [in, out]
    conv = keras.layers.Conv2D(6, 3)
    conv.build((None, 8, 8, 2))
    checkpoints.conv(loader, conv, "conv")
    layer_norm = keras.layers.LayerNormalization()
    layer_norm.build((None, 5))
    checkpoints.norm(loader, layer_norm, "ln")
    scale_only = keras.layers.LayerNormalization(center=False)
    scale_only.build((None, 5))
    checkpoints.norm(loader, scale_only, "rms")
    table = keras.layers.Embedding(7, 5)
    table.build((None,))
    checkpoints.embedding(loader, table, "table")
    loader.finish()
    np.testing.assert_array_equal(to_numpy(fc.kernel), weights["fc.weight"].T)
    np.testing.assert_array_equal(to_numpy(fc.bias), weights["fc.bias"])
    np.testing.assert_array_equal(to_numpy(no_bias.kernel), weights["c1d.weight"])
    np.testing.assert_array_equal(to_numpy(conv.kernel),
                                  weights["conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(to_numpy(layer_norm.beta), weights["ln.bias"])
    np.testing.assert_array_equal(to_numpy(scale_only.gamma), weights["rms.weight"])
    np.testing.assert_array_equal(to_numpy(table.embeddings), weights["table.weight"])


def test_finish_reports_missing_and_unexpected_once():
    layer = dense_layer(3, 5)
    loader = WeightLoader({"fc.weight": random(3, 5), "head.weight": random(2, 3),
                           "extra.weight": random(2), "h.0.attn.bias": random(4)})
    checkpoints.dense(loader, layer, "fc")  # no fc.bias in the checkpoint
    loader.get("fc.bias")
    with pytest.raises(ValueError) as error:
        loader.finish(ignore=(r"head\..*",))
    message = str(error.value)
    assert "Missing weights (1): fc.bias" in message
    assert "Unexpected weights (1): extra.weight" in message  # head ignored, buffer known


def test_config_helpers_name_the_allowed_values():
    assert checkpoints.activation({"hidden_act": "gelu_new"}) == "gelu_approximate"
    with pytest.raises(ValueError, match="`hidden_act` 'mish'.*gelu_new"):
        checkpoints.activation({"hidden_act": "mish"})
    assert checkpoints.check_model_type({}, ("gpt2",), "X", default="gpt2") == "gpt2"
    with pytest.raises(ValueError, match="model_type 'bert'.*X reads 'vit'"):
        checkpoints.check_model_type({"model_type": "bert"}, ("vit",), "X")
    with pytest.raises(ValueError, match="8 module names"):
        checkpoints.encoder_block(None, None, "layer.0", ("query",))


def _checkpoint_dir(tmp_path, tensors=None):
    from safetensors.numpy import save_file

    path = tmp_path / "checkpoint"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    save_file(tensors or {"w": random(16, 16)}, str(path / "model.safetensors"))
    return path


def test_truncated_or_corrupt_safetensors_name_the_file(tmp_path):
    path = _checkpoint_dir(tmp_path)
    config, weights = checkpoints.read_checkpoint(path)
    assert config == {"model_type": "vit"} and weights["w"].shape == (16, 16)
    weights_file = path / "model.safetensors"
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[:len(data) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=f"(?s){re.escape(os.fspath(weights_file))}.*truncated"):
        checkpoints.read_checkpoint(path)
    weights_file.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="model.safetensors"):
        checkpoints.read_checkpoint(path)
    (path / "config.json").write_text("{\"model_type\": ")
    with pytest.raises(ValueError, match="config.json` is not valid JSON"):
        checkpoints.read_checkpoint(path)


def test_corrupt_shard_names_the_shard(tmp_path):
    path = _checkpoint_dir(tmp_path)
    os.rename(path / "model.safetensors", path / "model-00001-of-00002.safetensors")
    (path / "model-00002-of-00002.safetensors").write_bytes(b"\x00" * 4)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match="model-00002-of-00002.safetensors"):
        checkpoints.read_checkpoint(path)
