import keras
import numpy as np

from keras_bigmodels.losses import SparseCrossEntropy
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
    from keras_bigmodels.losses import sparse_cross_entropy_from_logits

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


def test_linear_cross_entropy_value_matches_logits_loss():
    from keras_bigmodels.losses import (
        linear_cross_entropy,
        linear_cross_entropy_chunk,
        sparse_cross_entropy_from_logits,
    )

    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(3, 7, 8)).astype("float32")
    table = rng.normal(size=(13, 8)).astype("float32")
    targets = rng.integers(0, 13, (3, 7))
    weights = rng.random((3, 7)).astype("float32")
    logits = hidden @ table.T
    expected = np.sum(to_numpy(sparse_cross_entropy_from_logits(targets, logits)) * weights)
    # 21 rows in chunks of 4: the last chunk is padded (and its padding weighs nothing).
    got = linear_cross_entropy(hidden, table, targets, weights, chunk_size=4)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5)
    assert linear_cross_entropy_chunk(8192) == 512
    assert linear_cross_entropy_chunk(50257) == 128
    assert linear_cross_entropy_chunk(100) == 1024


def _fused_pair(**compile_kwargs):
    from keras_bigmodels.models import GPTBackbone, GPTCausalLM

    config = dict(vocabulary_size=37, num_layers=1, num_heads=2, hidden_dim=16,
                  intermediate_dim=32, max_sequence_length=12, dropout=0.0)
    models = []
    for fused in (True, False):
        keras.utils.set_random_seed(3)
        lm = GPTCausalLM(GPTBackbone(**config))
        lm.compile(optimizer=keras.optimizers.SGD(0.5), **{"fused_loss": fused, **compile_kwargs})
        models.append(lm)
    return models


def test_fused_loss_trains_exactly_like_logits_loss():
    """One `fit` step through the fused output layer + loss (forced on every backend)
    gives the loss and the updated weights of the plain logits path."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 37, (4, 12)).astype("int32")
    y = rng.integers(0, 37, (4, 12)).astype("int32")
    weights = (rng.random((4, 12)) > 0.3).astype("float32")
    for reduction, sample_weight in (("sum_over_batch_size", None),
                                     ("sum_over_batch_size", weights),
                                     ("mean_with_sample_weight", weights)):
        fused, plain = _fused_pair(loss=SparseCrossEntropy(reduction=reduction))
        assert fused._fused_loss and not plain._fused_loss
        losses = [lm.fit(x, y, sample_weight=sample_weight, batch_size=4, epochs=1,
                         verbose=0, shuffle=False).history["loss"][0] for lm in (fused, plain)]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
        for a, b in zip(fused.weights, plain.weights):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=2e-5, rtol=1e-4)
    # Direct calls, evaluation and prediction still see logits.
    assert to_numpy(fused(x, training=True)).shape == (4, 12, 37)
    np.testing.assert_allclose(fused.evaluate(x, y, verbose=0)[0],
                               plain.evaluate(x, y, verbose=0)[0], rtol=1e-5)


def test_fused_loss_argument_errors():
    import pytest

    with pytest.raises(ValueError, match="fused_loss"):
        _fused_pair(fused_loss="yes")
    with pytest.raises(ValueError, match="compiled metrics"):
        _fused_pair(metrics=["accuracy"])
    # "auto" quietly keeps logits when a metric needs them.
    from keras_bigmodels.models import GPTBackbone, GPTCausalLM

    lm = GPTCausalLM(GPTBackbone(37, 1, 2, 16, 32, max_sequence_length=12))
    lm.compile(metrics=["accuracy"])
    assert not lm._fused_loss


def test_fused_loss_under_mixed_precision():
    """bfloat16 hidden states and a float32 table: the fused step tracks the logits path."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 37, (4, 12)).astype("int32")
    y = rng.integers(0, 37, (4, 12)).astype("int32")
    fused, plain = _fused_pair()
    histories = [lm.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
                 .history["loss"] for lm in (fused, plain)]
    assert histories[0][-1] < histories[0][0]
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-3)


def _value_and_gradients(function, *arrays):
    """function(*arrays) and its gradients with respect to every array, on this backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(function, argnums=tuple(range(len(arrays))))(
            *arrays)
    elif backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            value = function(*variables)
        grads = tape.gradient(value, variables)
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = function(*tensors)
        grads = torch.autograd.grad(value, tensors)
        value = value.detach()
    return to_numpy(value), [to_numpy(g) for g in grads]


def test_linear_cross_entropy_with_bias_equals_logits_loss_and_gradients():
    """The output bias (BART's final_logits_bias) inside the chunks: the loss and the
    gradients of hidden, table and bias equal those of the full biased logits."""
    from keras_bigmodels.losses import linear_cross_entropy, sparse_cross_entropy_from_logits

    rng = np.random.default_rng(6)
    hidden = rng.normal(size=(3, 7, 8)).astype("float32")
    table = rng.normal(size=(13, 8)).astype("float32")
    # Large enough to move the softmax: a bias dropped or added twice shows.
    bias = (rng.normal(size=(13,)) * 2).astype("float32")
    targets = rng.integers(0, 13, (3, 7))
    weights = rng.random((3, 7)).astype("float32")

    def fused(h, t, b):
        return linear_cross_entropy(h, t, targets, weights, chunk_size=4, bias=b)

    def unfused(h, t, b):
        logits = keras.ops.matmul(h, keras.ops.transpose(t)) + b
        return keras.ops.sum(keras.ops.multiply(
            sparse_cross_entropy_from_logits(targets, logits), weights))

    value, grads = _value_and_gradients(fused, hidden, table, bias)
    expected_value, expected_grads = _value_and_gradients(unfused, hidden, table, bias)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    without_bias = to_numpy(linear_cross_entropy(hidden, table, targets, weights, chunk_size=4))
    assert abs(float(without_bias) - float(value)) > 1e-2
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert np.abs(grads[2]).max() > 1e-3
