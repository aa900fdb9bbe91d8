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
