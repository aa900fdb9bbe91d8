import keras
import numpy as np
import pytest
from keras import ops

from keras_bigmodels.layers import (
    FeedForward,
    PatchEmbedding,
    TokenEmbedding,
    TransformerDecoderBlock,
    TransformerEmbedding,
    TransformerEncoderBlock,
)
from tests.testing import assert_layer_roundtrip, assert_saved_model_matches, to_numpy


def rand(*shape):
    return np.random.RandomState(len(shape)).normal(size=shape).astype("float32")


def test_feedforward_dense_and_gated_match_formula(tmp_path):
    x = rand(2, 3, 8)
    ff = FeedForward(16, activation="relu")
    w = [to_numpy(v) for v in ff.weights] if ff.built else None
    out = to_numpy(ff(x))
    w1, b1, w2, b2 = (to_numpy(v) for v in ff.weights)
    np.testing.assert_allclose(out, np.maximum(x @ w1 + b1, 0) @ w2 + b2, atol=1e-5)
    gated = FeedForward(16, activation="gelu_approximate", gated=True, use_bias=False)
    out = to_numpy(gated(x))
    weights = {v.path.split("/", 1)[1]: to_numpy(v) for v in gated.weights}
    g = x @ weights["intermediate_gate/kernel"]
    gelu = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))
    expected = (gelu * (x @ weights["intermediate/kernel"])) @ weights["output/kernel"]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert_layer_roundtrip(gated, x, tmp_path)
    with pytest.raises(ValueError, match="activation"):
        FeedForward(4, activation="sigmoid-ish")
    assert w is None


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_block_wiring(normalize_first):
    x = rand(2, 5, 16)
    block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32,
                                    normalize_first=normalize_first)
    out = to_numpy(block(x))
    attn, ffn = block.self_attention, block.feedforward
    n1, n2 = block.self_attention_norm, block.feedforward_norm
    x = ops.convert_to_tensor(x)
    if normalize_first:
        h = x + attn(n1(x))
        expected = h + ffn(n2(h))
    else:
        h = n1(x + attn(x))
        expected = n2(h + ffn(h))
    np.testing.assert_allclose(out, to_numpy(expected), atol=1e-5)


def test_encoder_block_rms_norm_and_roundtrip(tmp_path):
    block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32, norm="rms_norm",
                                    use_bias=False, gated=True, normalize_first=True,
                                    attention_scale=1.0)
    x = rand(2, 4, 16)
    assert_layer_roundtrip(block, x, tmp_path)
    assert all("bias" not in v.path for v in block.weights)
    with pytest.raises(ValueError, match="norm"):
        TransformerEncoderBlock(num_heads=2, intermediate_dim=8, norm="batch_norm")


def test_decoder_block_cache_equals_full_sequence():
    x, memory = rand(2, 6, 16), rand(2, 4, 16)
    block = TransformerDecoderBlock(num_heads=4, intermediate_dim=32, normalize_first=True)
    full = to_numpy(block(x, memory))
    cache = np.zeros((2, 2, 4, 6, 4), "float32")
    outs = []
    for i in range(6):
        out, cache = block(x[:, i:i + 1], memory, cache=cache, cache_update_index=i)
        outs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="encoder_outputs"):
        block(x)


def test_decoder_only_block_saves(tmp_path):
    inputs = keras.Input((5, 16))
    outputs = TransformerDecoderBlock(num_heads=2, intermediate_dim=32)(inputs)
    assert_saved_model_matches(keras.Model(inputs, outputs), rand(2, 5, 16), tmp_path)


def test_token_embedding_tied_output_and_id_check():
    emb = TokenEmbedding(20, 8)
    ids = np.array([[1, 2, 19]])
    hidden = emb(ids)
    logits = to_numpy(emb(hidden, reverse=True))
    table = to_numpy(emb.embeddings)
    np.testing.assert_allclose(logits, to_numpy(hidden) @ table.T, atol=1e-5)
    with pytest.raises(ValueError, match=r"outside the vocabulary.*\[0, 19\]"):
        emb(np.array([[3, 20]]))


def test_transformer_embedding_factorized_with_segments(tmp_path):
    layer = TransformerEmbedding(50, 16, max_sequence_length=8, num_segments=2, embedding_dim=4,
                                 position_offset=2)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    segments = np.array([[0, 0, 1], [0, 1, 1]])
    out = to_numpy(layer(ids, segment_ids=segments))
    assert out.shape == (2, 3, 16)
    tok = to_numpy(layer.token_embedding.embeddings)[ids]
    pos = to_numpy(layer.position_embedding.embeddings)[2:5]
    seg = to_numpy(layer.segment_embedding.embeddings)[segments]
    summed = to_numpy(layer.embedding_norm(tok + pos + seg))
    expected = to_numpy(layer.embedding_projection(summed))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="max_sequence_length=8"):
        layer(np.ones((1, 9), "int32"))
    assert_layer_roundtrip(layer, ids, tmp_path, segment_ids=segments)


def test_patch_embedding_equals_dense_on_patches(tmp_path):
    images = rand(2, 8, 8, 3)
    layer = PatchEmbedding(4, 6)
    out = to_numpy(layer(images))
    kernel, bias = (to_numpy(v) for v in layer.weights)
    patch = images[:, 4:8, 0:4, :].reshape(2, -1)  # row 1, column 0 -> patch index 2
    np.testing.assert_allclose(out[:, 2], patch @ kernel.reshape(-1, 6) + bias, atol=1e-5)
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        layer(rand(1, 10, 8, 3))
    with pytest.raises(ValueError, match="channels-last"):
        PatchEmbedding(4, 6)(rand(8, 8, 3))
    assert_layer_roundtrip(layer, images, tmp_path)
    assert ops.shape(PatchEmbedding(2, 6, flatten=False)(images)) == (2, 4, 4, 6)


@pytest.mark.parametrize("normalize_first,kv_heads,cross,prefill", [
    (True, 2, False, 1),    # GPT-2: fused q/k/v, torch kernels for norms, dense, attention
    (False, 2, True, 3),    # post-norm with cross-attention, a 3-token prefill first
    (True, 1, False, 2),    # multi-query heads: attention falls back to the Keras path
])
def test_eager_decoding_mode_matches_layer_calls(normalize_first, kv_heads, cross, prefill):
    """Direct `call`s, torch kernels, int positions and in-place cache writes give the
    same numbers as the layers called normally (and as the uncached block)."""
    from keras_bigmodels.backend.decoding import eager_decoding, own

    block = TransformerDecoderBlock(num_heads=2, num_key_value_heads=kv_heads,
                                    intermediate_dim=16, dropout=0.0,
                                    normalize_first=normalize_first)
    x = rand(2, 5, 8)
    encoder = rand(2, 3, 8) if cross else None
    block(x, encoder)
    steps = []
    for mode in (False, True):
        with eager_decoding(mode):
            cache = own(ops.zeros((2, 2, kv_heads, 5, 4)))  # the loop's own: written in place
            outs = []
            out, cache = block(x[:, :prefill], encoder, cache=cache, cache_update_index=0)
            outs.append(to_numpy(out))
            for i in range(prefill, 5):
                out, cache = block(x[:, i:i + 1], encoder, cache=cache, cache_update_index=i)
                outs.append(to_numpy(out))
            steps.append((np.concatenate(outs, axis=1), to_numpy(cache)))
    np.testing.assert_allclose(steps[1][0], steps[0][0], atol=1e-5)
    np.testing.assert_allclose(steps[1][1], steps[0][1], atol=1e-6)
    np.testing.assert_allclose(steps[0][0], to_numpy(block(x, encoder)), atol=1e-5)


def test_eager_decoding_reverse_embedding_and_memo():
    """The tied output layer reads a transposed copy made once per decoding block."""
    from keras_bigmodels.backend.decoding import eager_decoding
    from keras_bigmodels.backend.decoding import memo as decoding_memo

    emb = TokenEmbedding(11, 4)
    h = rand(2, 1, 4)
    emb(ops.ones((1, 1), "int32"))
    expected = to_numpy(emb(h, reverse=True))
    built = []
    with eager_decoding():
        for _ in range(2):
            np.testing.assert_allclose(to_numpy(emb(h, reverse=True)), expected, atol=1e-6)
            decoding_memo("key", lambda: built.append(1))
    assert built == [1]
    decoding_memo("key", lambda: built.append(1))
    assert built == [1, 1]
