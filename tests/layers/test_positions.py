import math

import numpy as np
import pytest

from keras_bigmodels.layers import (
    PositionEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)
from tests.testing import assert_layer_roundtrip, to_numpy


def test_sinusoidal_matches_paper_formula():
    table = to_numpy(SinusoidalPositionEncoding()(np.zeros((1, 10, 16), "float32")))
    pos = np.arange(10)[:, None]
    i = np.arange(0, 16, 2)[None, :]
    np.testing.assert_allclose(table[:, 0::2], np.sin(pos / 10000 ** (i / 16)), atol=1e-5)
    np.testing.assert_allclose(table[:, 1::2], np.cos(pos / 10000 ** (i / 16)), atol=1e-5)
    shifted = to_numpy(SinusoidalPositionEncoding()(np.zeros((1, 4, 16), "float32"), start_index=6))
    np.testing.assert_allclose(shifted, table[6:], atol=1e-5)


def test_learned_positions_slice_and_length_check(tmp_path):
    layer = PositionEmbedding(8)
    x = np.zeros((2, 5, 4), "float32")
    out = to_numpy(layer(x))
    np.testing.assert_allclose(out, to_numpy(layer.embeddings)[:5])
    np.testing.assert_allclose(to_numpy(layer(x[:, :2], start_index=3)),
                               to_numpy(layer.embeddings)[3:5])
    with pytest.raises(ValueError, match="max_sequence_length=8"):
        layer(np.zeros((1, 9, 4), "float32"))
    assert_layer_roundtrip(layer, x, tmp_path)


def test_rotary_matches_numpy_and_is_relative():
    x = np.random.RandomState(0).normal(size=(1, 6, 2, 8)).astype("float32")
    out = to_numpy(RotaryEmbedding()(x))
    pos = np.arange(6)[:, None]
    inv = 1.0 / 10000 ** (np.arange(0, 8, 2) / 8)
    ang = np.concatenate([pos * inv, pos * inv], -1)[None, :, None, :]
    rot = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    np.testing.assert_allclose(out, x * np.cos(ang) + rot * np.sin(ang), atol=1e-5)
    # q.k after rotation depends only on the distance between positions.
    q = np.tile(x[:, :1], (1, 6, 1, 1))
    rq = to_numpy(RotaryEmbedding()(q))
    d1 = (rq[0, 1, 0] * rq[0, 3, 0]).sum()
    d2 = (rq[0, 2, 0] * rq[0, 4, 0]).sum()
    np.testing.assert_allclose(d1, d2, rtol=1e-4)


def t5_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """Transcription of T5's _relative_position_bucket for one integer."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0) * num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_match_t5(bidirectional):
    layer = RelativePositionBias(num_heads=3, num_buckets=32, max_distance=128,
                                 bidirectional=bidirectional)
    bias = to_numpy(layer(query_length=40, key_length=300))
    table = to_numpy(layer.embeddings)
    for q, k in [(0, 0), (3, 1), (1, 3), (10, 200), (39, 0), (20, 299), (0, 17)]:
        bucket = t5_bucket(k - q, bidirectional, 32, 128)
        np.testing.assert_allclose(bias[0, :, q, k], table[bucket], atol=1e-6)
    offset = to_numpy(layer(query_length=1, key_length=300, query_offset=20))
    np.testing.assert_allclose(offset[0, :, 0], bias[0, :, 20], atol=1e-6)


def test_position_config_roundtrips(tmp_path):
    x = np.zeros((1, 4, 2, 8), "float32")
    assert_layer_roundtrip(RotaryEmbedding(rotary_fraction=0.5), x, tmp_path)
    assert_layer_roundtrip(SinusoidalPositionEncoding(), np.zeros((1, 4, 8), "float32"), tmp_path)
    layer = RelativePositionBias(num_heads=2)
    clone = RelativePositionBias.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="rotary_fraction"):
        RotaryEmbedding(rotary_fraction=0)
