import keras
import numpy as np

from keras_bigmodels.objectives.losses import SparseCrossEntropy
from tests.testing import to_numpy


def test_sparse_cross_entropy_equals_keras():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype("float32") * 3
    targets = rng.integers(0, 11, (2, 5))
    ours = SparseCrossEntropy()(targets, logits)
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets, logits)
    np.testing.assert_allclose(to_numpy(ours), to_numpy(reference), rtol=1e-6)
    weights = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], "float32")
    np.testing.assert_allclose(
        to_numpy(SparseCrossEntropy()(targets, logits, sample_weight=weights)),
        to_numpy(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            targets, logits, sample_weight=weights)), rtol=1e-6)
    restored = SparseCrossEntropy.from_config(SparseCrossEntropy().get_config())
    np.testing.assert_allclose(to_numpy(restored(targets, logits)), to_numpy(ours), rtol=1e-6)


def test_sparse_cross_entropy_per_position_matches_numpy():
    """-log softmax(logits)[target] at every position, mixed-precision logits included."""
    from keras_bigmodels.objectives.losses import sparse_cross_entropy_from_logits

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 7)).astype("float32") * 4
    targets = rng.integers(0, 7, (3, 4))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    for dtype in ("float32", "bfloat16"):
        got = sparse_cross_entropy_from_logits(targets, keras.ops.cast(logits, dtype))
        assert to_numpy(got).shape == (3, 4)
        tolerance = 1e-5 if dtype == "float32" else 0.1
        np.testing.assert_allclose(to_numpy(got), expected, atol=tolerance, rtol=tolerance)
