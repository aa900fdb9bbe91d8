import keras
import numpy as np
import pytest

from keras_bigmodels.layers import MultiHeadAttention, RelativePositionBias
from tests.testing import assert_layer_roundtrip, to_numpy


def numpy_attention(layer, query, value, mask=None, bias=None):
    """softmax(Q K^T / sqrt(d_k) + bias) V with the layer's weights, in numpy float64."""
    w = {v.path.split("/", 1)[1]: to_numpy(v).astype(np.float64) for v in layer.weights}
    q = np.einsum("btd,dnh->btnh", query, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bsd,dnh->bsnh", value, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bsd,dnh->bsnh", value, w["value/kernel"]) + w["value/bias"]
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -1e9)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", probs, v)
    return np.einsum("btnh,nhd->btd", out, w["output/kernel"]) + w["output/bias"], probs


def rand(*shape):
    return np.random.RandomState(sum(shape)).normal(size=shape).astype("float32")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_matches_numpy_formula_with_masks(fused, kv_heads):
    x = rand(2, 6, 16)
    padding = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    layer = MultiHeadAttention(num_heads=4, num_key_value_heads=kv_heads, use_fused=fused)
    out = layer(x, padding_mask=padding, use_causal_mask=True)
    mask = padding[:, None, None, :] & np.tril(np.ones((6, 6), bool))[None, None]
    expected, _ = numpy_attention(layer, x.astype(np.float64), x.astype(np.float64), mask)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-4)


def test_cross_attention_with_attention_mask_and_bias():
    x, memory = rand(2, 3, 16), rand(2, 5, 12)
    attention_mask = np.random.RandomState(1).rand(2, 3, 5) > 0.3
    attention_mask[..., 0] = True
    bias = rand(1, 2, 3, 5)
    layer = MultiHeadAttention(num_heads=2, key_dim=8)
    out = layer(x, memory, attention_mask=attention_mask, attention_bias=bias)
    expected, _ = numpy_attention(layer, x.astype(np.float64), memory.astype(np.float64),
                                  attention_mask[:, None], bias)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-4)
    assert out.shape == (2, 3, 16)


def test_fused_and_explicit_paths_agree():
    x = rand(2, 7, 32)
    bias = rand(1, 4, 7, 7)
    layer = MultiHeadAttention(num_heads=4, num_key_value_heads=2, use_fused=True)
    padding = np.array([[1] * 7, [0, 0, 1, 1, 1, 1, 1]], bool)  # left padding
    fused = to_numpy(layer(x, padding_mask=padding, attention_bias=bias, use_causal_mask=True))
    layer.use_fused = False
    explicit = to_numpy(layer(x, padding_mask=padding, attention_bias=bias, use_causal_mask=True))
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
    assert np.isfinite(fused).all(), "a fully masked row must not produce NaNs"


def test_causal_attention_never_attends_forward():
    x = rand(1, 8, 16)
    layer = MultiHeadAttention(num_heads=2)
    _, scores = layer(x, use_causal_mask=True, return_attention_scores=True)
    scores = to_numpy(scores)
    assert np.all(np.triu(scores[0, 0], k=1) < 1e-7)
    # Changing a later token leaves every earlier output unchanged.
    y = x.copy()
    y[0, 5:] += 1.0
    a = to_numpy(layer(x, use_causal_mask=True))
    b = to_numpy(layer(y, use_causal_mask=True))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_kv_cache_incremental_decoding_equals_full_sequence(kv_heads):
    x = rand(2, 6, 16)
    layer = MultiHeadAttention(num_heads=4, num_key_value_heads=kv_heads)
    full = to_numpy(layer(x, use_causal_mask=True))
    cache = np.zeros((2, 2, kv_heads, 8, 4), "float32")
    # A 3-token prompt, then one token at a time.
    out, cache = layer(x[:, :3], cache=cache, cache_update_index=0, use_causal_mask=True)
    steps = [to_numpy(out)]
    for i in range(3, 6):
        out, cache = layer(x[:, i:i + 1], cache=cache, cache_update_index=i,
                           use_causal_mask=True)
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_relative_bias_from_layer_matches_numpy():
    x = rand(1, 5, 8)
    rel = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=16)
    bias = rel(query_length=5, key_length=5)
    layer = MultiHeadAttention(num_heads=2)
    out = layer(x, attention_bias=bias)
    expected, _ = numpy_attention(layer, x.astype(np.float64), x.astype(np.float64),
                                  bias=to_numpy(bias).astype(np.float64))
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-4)


def test_attention_dropout_only_in_training():
    x = rand(2, 4, 8)
    layer = MultiHeadAttention(num_heads=2, dropout=0.5)
    a = to_numpy(layer(x))
    np.testing.assert_allclose(to_numpy(layer(x)), a, atol=1e-6)
    assert not np.allclose(to_numpy(layer(x, training=True)), a)


def test_config_roundtrip(tmp_path):
    layer = MultiHeadAttention(num_heads=4, num_key_value_heads=2, dropout=0.1, scale=0.5)
    clone = assert_layer_roundtrip(layer, rand(2, 3, 16), tmp_path)
    assert clone.get_config() == layer.get_config()


def test_keras_file_save_load(tmp_path):
    inputs = keras.Input((5, 16))
    outputs = MultiHeadAttention(num_heads=2)(inputs, use_causal_mask=True)
    model = keras.Model(inputs, outputs)
    from tests.testing import assert_saved_model_matches
    assert_saved_model_matches(model, rand(2, 5, 16), tmp_path)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        MultiHeadAttention(num_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(num_heads=0)
    with pytest.raises(ValueError, match="must divide by `num_heads`"):
        MultiHeadAttention(num_heads=3)(rand(1, 2, 16))
    layer = MultiHeadAttention(num_heads=2)
    with pytest.raises(ValueError, match="padding_mask"):
        layer(rand(1, 4, 8), padding_mask=np.ones((1, 5), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(rand(1, 4, 8), attention_mask=np.ones((1, 4, 3), bool))
    with pytest.raises(ValueError, match="cache holds 4 positions"):
        layer(rand(1, 2, 8), cache=np.zeros((1, 2, 2, 4, 4), "float32"), cache_update_index=3)
    with pytest.raises(ValueError, match="num_key_value_heads=2, max_length, key_dim=4"):
        layer(rand(1, 2, 8), cache=np.zeros((1, 2, 2, 4, 8), "float32"), cache_update_index=0)
    with pytest.raises(ValueError, match="cache_update_index"):
        layer(rand(1, 2, 8), cache=np.zeros((1, 2, 2, 4, 4), "float32"), use_causal_mask=True)


def test_blockwise_causal_attention_equals_full_mask():
    """Long causal self-attention on the explicit path skips masked blocks, same numbers."""
    from keras_bigmodels.layers.attention import causal_blocks

    assert causal_blocks(256, 256) == [(0, 128), (128, 256)]
    assert len(causal_blocks(2048, 2048)) == 8
    assert causal_blocks(128, 128) is None and causal_blocks(300, 300) is None
    assert causal_blocks(256, 300) is None and causal_blocks(None, None) is None
    x = rand(2, 256, 8)
    explicit = MultiHeadAttention(num_heads=2, use_fused=False)
    fused = MultiHeadAttention(num_heads=2, use_fused=True)
    explicit.build(x.shape)
    fused.build(x.shape)
    fused.set_weights(explicit.get_weights())
    np.testing.assert_allclose(to_numpy(explicit(x, use_causal_mask=True)),
                               to_numpy(fused(x, use_causal_mask=True)), atol=1e-5)
    # The scores (and so the full path) are still returned when asked for.
    out, scores = explicit(x, use_causal_mask=True, return_attention_scores=True)
    assert to_numpy(scores).shape == (2, 2, 256, 256)
    np.testing.assert_allclose(to_numpy(out), to_numpy(fused(x, use_causal_mask=True)),
                               atol=1e-5)


@pytest.mark.parametrize("prefill", [1, 3])
def test_eager_decoding_kernel_with_position_bias_and_masks_equals_keras_call(
        prefill, monkeypatch):
    """T5's decode step in `eager_decoding()`: causal self-attention with an additive
    relative position bias over the cache (scale 1.0) and cross-attention with a padding
    mask take the torch attention kernel (the bias and masks as one additive mask), and
    give the Keras call's numbers."""
    from keras_bigmodels.backend.decoding import eager_decoding, own

    calls = []
    if keras.backend.backend() == "torch":
        from keras_bigmodels.backend import torch_backend

        kernel = torch_backend.TorchOps.attention
        monkeypatch.setattr(torch_backend.TorchOps, "attention", staticmethod(
            lambda *args, **kwargs: calls.append(kwargs) or kernel(*args, **kwargs)))
    batch, length, max_length, heads = 2, 5, 7, 2
    self_attention = MultiHeadAttention(num_heads=heads, key_dim=4, use_bias=False, scale=1.0)
    cross_attention = MultiHeadAttention(num_heads=heads, key_dim=4, use_bias=False, scale=1.0)
    position_bias = RelativePositionBias(num_heads=heads, num_buckets=8, max_distance=16,
                                         bidirectional=False)
    x, memory = rand(batch, length, 16), rand(batch, 6, 16)
    memory_mask = np.ones((batch, 6), bool)
    memory_mask[1, 3:] = False
    position_bias.build()
    # Large enough that a dropped or misplaced bias column shows.
    position_bias.embeddings.assign(rand(8, heads) * 3)
    # Reference: the whole sequence at once, no cache.
    expected_cross = to_numpy(cross_attention(x, memory, padding_mask=memory_mask))
    full_bias = position_bias(query_length=length, key_length=length)
    expected_self = to_numpy(self_attention(x, use_causal_mask=True, attention_bias=full_bias))
    results = []
    for eager in (False, True):
        with eager_decoding(eager):
            cache = own(keras.ops.zeros((batch, 2, heads, max_length, 4)))
            memory_cache = cross_attention.key_value_cache(memory)
            self_steps, cross_steps, start = [], [], 0
            for stop in [prefill] + list(range(prefill + 1, length + 1)):
                bias = position_bias(query_length=stop - start, key_length=max_length,
                                     query_offset=start)
                out, cache = self_attention(x[:, start:stop], cache=cache,
                                            cache_update_index=start, use_causal_mask=True,
                                            attention_bias=bias)
                self_steps.append(to_numpy(out))
                out, _ = cross_attention(x[:, start:stop], padding_mask=memory_mask,
                                         cache=memory_cache)
                cross_steps.append(to_numpy(out))
                start = stop
        results.append((np.concatenate(self_steps, 1), np.concatenate(cross_steps, 1)))
    for got_self, got_cross in results:
        np.testing.assert_allclose(got_self, expected_self, atol=1e-5)
        np.testing.assert_allclose(got_cross, expected_cross, atol=1e-5)
    if keras.backend.backend() == "torch":
        steps = 1 + length - prefill
        assert len(calls) == 2 * steps  # every eager step: self and cross on the kernel
        assert sum(call["bias"] is not None for call in calls) == steps
        assert sum(call["mask"] is not None for call in calls) == steps + (prefill > 1)


@pytest.mark.parametrize("use_bias", [True, False])
def test_matrix_projections_train_like_einsum(use_bias, monkeypatch):
    """`backend.prefers_matrix_projections()` (TensorFlow's training graph) projects with the
    kernels reshaped to matrices: the same outputs, and two training steps (so the
    gradients) leave the same weights as EinsumDense's einsum, on every backend."""
    from keras_bigmodels import backend

    x = rand(3, 5, 16)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    y = rand(3, 5, 16)

    def build(matrices):
        monkeypatch.setattr(backend, "prefers_matrix_projections", lambda: matrices)
        keras.utils.set_random_seed(3)
        inputs = keras.Input((5, 16))
        padding = keras.Input((5,), dtype="bool")
        layer = MultiHeadAttention(num_heads=4, key_dim=4, value_dim=6, num_key_value_heads=2,
                                   use_bias=use_bias, use_fused=False)
        outputs = layer(inputs, padding_mask=padding, use_causal_mask=True)
        model = keras.Model([inputs, padding], outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        initial = [to_numpy(w) for w in model.weights]
        before = to_numpy(model([x, mask]))
        for _ in range(2):
            model.train_on_batch([x, mask], y)
        trained = [to_numpy(w) for w in model.weights]
        # Every projection kernel moved, so equal weights below mean equal gradients.
        assert all(not np.allclose(a, b) for a, b in zip(initial, trained) if a.ndim == 3)
        return before, trained

    einsum_out, einsum_weights = build(False)
    matrix_out, matrix_weights = build(True)
    np.testing.assert_allclose(matrix_out, einsum_out, atol=1e-5)
    for got, expected in zip(matrix_weights, einsum_weights):
        np.testing.assert_allclose(got, expected, atol=1e-5)
