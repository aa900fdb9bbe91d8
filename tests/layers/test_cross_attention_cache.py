"""Cross-attention keys/values computed once (`key_value_cache`) give the same decoder steps
as attending to the encoder outputs at every step."""

import numpy as np
from keras import ops

from keras_bigmodels.backend.decoding import eager_decoding, own
from keras_bigmodels.layers import MultiHeadAttention, TransformerDecoderBlock
from tests.testing import to_numpy


def rand(*shape):
    return ops.convert_to_tensor(np.random.default_rng(len(shape)).normal(size=shape)
                                 .astype("float32"))


def test_key_value_cache_is_read_only_cross_attention():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, memory = rand(2, 3, 8), rand(2, 5, 8)
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    expected = to_numpy(layer(query, memory, padding_mask=mask))
    kv = layer.key_value_cache(memory)
    assert tuple(kv.shape) == (2, 2, 2, 5, 4)
    out, same = layer(query, padding_mask=mask, cache=kv)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(same), to_numpy(kv))


def test_decoder_block_steps_with_cross_attention_cache():
    block = TransformerDecoderBlock(num_heads=2, intermediate_dim=16, normalize_first=True)
    x, memory = rand(2, 4, 8), rand(2, 6, 8)
    mask = np.ones((2, 6), bool)
    mask[0, 4:] = False
    full = to_numpy(block(x, memory, encoder_padding_mask=mask))
    for eager in (False, True):
        with eager_decoding(eager):
            kv = block.cross_attention_cache(memory)
            cache = own(ops.zeros((2, 2, 2, 4, 4)))
            steps = []
            for i in range(4):
                out, cache = block(x[:, i:i + 1], encoder_padding_mask=mask, cache=cache,
                                   cache_update_index=i, cross_attention_cache=kv)
                steps.append(to_numpy(out))
        np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
