"""`decoding.eager_training()`: torch training steps through registered kernels and torch op
kernels give the values and gradients of the plain Keras path; folded attention biases."""

import contextlib

import keras
import numpy as np
import pytest

from keras_bigmodels.backend import decoding
from keras_bigmodels.layers.attention import MASK_VALUE, masked_bias
from tests.testing import backend, to_numpy

torch_only = pytest.mark.skipif(backend() != "torch",
                                reason="eager_training is a no-op where steps are compiled")


def test_masked_bias_equals_numpy():
    rng = np.random.default_rng(0)
    bias = rng.normal(size=(1, 2, 4, 4)).astype("float32")
    padding = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], "int32")
    causal = np.tril(np.ones((4, 4), bool))
    expected = np.where(padding[:, None, None, :].astype(bool) & causal, bias, MASK_VALUE)
    got = to_numpy(masked_bias(bias, padding, causal=True))
    assert got.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(to_numpy(masked_bias(bias, padding)),
                               np.where(padding[:, None, None, :].astype(bool), bias,
                                        MASK_VALUE))
    assert masked_bias(bias) is bias


def test_eager_training_is_a_frame_only_on_torch():
    with decoding.eager_training():
        assert decoding.active() == (backend() == "torch")
        if backend() == "torch":
            # Autograd holds the tensors: nothing is written in place.
            assert not decoding._frame()["in_place"]
    with decoding.eager_training(enabled=False):
        assert not decoding.active()
    assert not decoding.active()


def _torch_value_and_gradients(function, *arrays):
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value = function(*tensors)
    grads = torch.autograd.grad(value, tensors)
    return value.detach().numpy(), [g.numpy() for g in grads]


@torch_only
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_linear_cross_entropy_torch_kernel_equals_keras_ops(with_bias, with_weights):
    """TorchOps.linear_cross_entropy (taken inside eager_training) against the keras.ops
    chunk loop: loss and the gradients of hidden, table and bias, over a padded last
    chunk (21 rows in chunks of 4) and a non-unit upstream gradient."""
    from keras_bigmodels.backend import torch_backend
    from keras_bigmodels.losses import linear_cross_entropy

    calls = []
    original = torch_backend.TorchOps.linear_cross_entropy

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(3, 7, 8)).astype("float32")
    table = rng.normal(size=(13, 8)).astype("float32")
    bias = (rng.normal(size=(13,)) * 2).astype("float32")
    targets = rng.integers(0, 13, (3, 7))
    weights = rng.random((3, 7)).astype("float32") if with_weights else None
    arrays = (hidden, table, bias) if with_bias else (hidden, table)

    def loss(h, t, b=None):
        return 0.37 * linear_cross_entropy(h, t, targets, weights, chunk_size=4, bias=b)

    expected_value, expected_grads = _torch_value_and_gradients(loss, *arrays)
    torch_backend.TorchOps.linear_cross_entropy = staticmethod(spy)
    try:
        with decoding.eager_training():
            value, grads = _torch_value_and_gradients(loss, *arrays)
    finally:
        torch_backend.TorchOps.linear_cross_entropy = staticmethod(original)
    assert calls == [1]
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


def _backbones():
    from keras_bigmodels.models import BartBackbone, T5Backbone

    return {
        "t5": T5Backbone(50, 2, 2, 16, 32, dropout=0.0),
        "t5_gated": T5Backbone(50, 2, 2, 16, 32, key_dim=4, activation="gelu", gated=True,
                               tie_embeddings=False, dropout=0.0),
        "bart": BartBackbone(50, 2, 2, 16, 32, max_sequence_length=16, dropout=0.0),
    }


@torch_only
@pytest.mark.parametrize("name", ["t5", "t5_gated", "bart"])
def test_backbone_values_and_gradients_equal_in_eager_training(name):
    """Registered kernels (Dense, LayerNorm, RMSNorm), matrix projections, SDPA with a
    folded bias, all differentiated: outputs and every weight's gradient as without."""
    import torch

    backbone = _backbones()[name]
    rng = np.random.default_rng(2)
    encoder = rng.integers(3, 50, (2, 9))
    decoder = rng.integers(3, 50, (2, 5))
    encoder_mask = np.ones_like(encoder)
    encoder_mask[1, 6:] = 0
    decoder_mask = np.ones_like(decoder)
    decoder_mask[0, 4:] = 0
    inputs = {"encoder_token_ids": torch.tensor(encoder),
              "encoder_padding_mask": torch.tensor(encoder_mask),
              "decoder_token_ids": torch.tensor(decoder),
              "decoder_padding_mask": torch.tensor(decoder_mask)}
    probes = {"encoder_sequence_output": torch.tensor(rng.normal(size=(2, 9, 16)),
                                                      dtype=torch.float32),
              "decoder_sequence_output": torch.tensor(rng.normal(size=(2, 5, 16)),
                                                      dtype=torch.float32)}
    weights = [v.value for v in backbone.trainable_variables]
    results = []
    for enabled in (False, True):
        with decoding.eager_training(enabled):
            outputs = backbone(inputs, training=True)
        loss = sum((outputs[key] * probe).sum() for key, probe in probes.items())
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        results.append(([outputs[key].detach().numpy() for key in probes], grads))
    (plain_outputs, plain_grads), (fast_outputs, fast_grads) = results
    for got, expected in zip(fast_outputs, plain_outputs):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    checked = 0
    for variable, got, expected in zip(backbone.trainable_variables, fast_grads, plain_grads):
        assert (got is None) == (expected is None), variable.path
        if got is not None:
            np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=5e-5, rtol=1e-4,
                                       err_msg=variable.path)
            checked += 1
    assert checked >= len(weights) - 2  # the decoder's unused final-layer extras aside


@torch_only
@pytest.mark.parametrize("family", ["t5", "bart"])
def test_train_step_runs_in_eager_training_and_equals_the_keras_step(family, monkeypatch):
    """`Seq2SeqLM.train_step` enters eager_training on torch (the fused loss goes through
    the torch kernel), and one SGD step lands on the weights of the plain Keras step."""
    from keras_bigmodels.backend import torch_backend
    from keras_bigmodels.models import base as seq2seq_lm  # EagerTrainingStep's eager_training

    rng = np.random.default_rng(3)
    encoder = rng.integers(3, 50, (4, 9)).astype("int32")
    labels = rng.integers(3, 50, (4, 5)).astype("int32")
    decoder = np.concatenate([np.zeros((4, 1), "int32"), labels[:, :-1]], axis=1)
    x = {"encoder_token_ids": encoder, "encoder_padding_mask": np.ones_like(encoder),
         "decoder_token_ids": decoder, "decoder_padding_mask": np.ones_like(decoder)}
    x["encoder_padding_mask"][2, 7:] = 0
    sample_weight = np.ones_like(labels, "float32")
    sample_weight[1, 3:] = 0

    def build():
        from keras_bigmodels.models import (BartBackbone, BartSeq2SeqLM, T5Backbone,
                                            T5Seq2SeqLM)

        keras.utils.set_random_seed(4)
        if family == "t5":
            lm = T5Seq2SeqLM(T5Backbone(50, 2, 2, 16, 32, dropout=0.0))
        else:
            lm = BartSeq2SeqLM(BartBackbone(50, 2, 2, 16, 32, max_sequence_length=16,
                                            dropout=0.0))
        lm.compile(optimizer=keras.optimizers.SGD(1.0), metrics=[])
        return lm

    calls = []
    original = torch_backend.TorchOps.linear_cross_entropy

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_backend.TorchOps, "linear_cross_entropy", staticmethod(spy))
    fast = build()
    fast_loss = fast.train_on_batch(x, labels, sample_weight=sample_weight)
    assert fast._fused_loss and calls == [1]

    monkeypatch.setattr(seq2seq_lm, "eager_training",
                        lambda enabled=True: contextlib.nullcontext())
    plain = build()
    plain_loss = plain.train_on_batch(x, labels, sample_weight=sample_weight)
    assert calls == [1]
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
    moved = 0
    for a, b, before in zip(fast.weights, plain.weights, build().weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=2e-5, rtol=1e-4,
                                   err_msg=a.path)
        moved += not np.allclose(to_numpy(a), to_numpy(before))
    assert moved > len(fast.weights) // 2


@torch_only
def test_cache_entries_op_kernel_equals_keras_form():
    """TorchOps.cache_entries (the eager decode step's cache block) equals KerasKernels'."""
    import torch

    from keras_bigmodels.backend import torch_backend

    rng = np.random.default_rng(5)
    k = torch.tensor(rng.normal(size=(2, 3, 4, 5)), dtype=torch.float32)
    v = torch.tensor(rng.normal(size=(2, 3, 4, 5)), dtype=torch.float32)
    for dtype in (torch.float32, torch.bfloat16):
        got = torch_backend.TorchOps.cache_entries(k, v, dtype)
        expected = decoding.KerasKernels.cache_entries(k, v, dtype)
        assert got.shape == (2, 2, 4, 3, 5) and got.dtype == dtype
        np.testing.assert_array_equal(got.float().numpy(), expected.float().numpy())
        np.testing.assert_array_equal(got[:, 1].float().numpy(),
                                      v.transpose(1, 2).to(dtype).float().numpy())


@torch_only
@pytest.mark.parametrize("scale", [1.0, 0.125])
@pytest.mark.parametrize("bias_batch", [1, 2])
@pytest.mark.parametrize("with_mask", [False, True])
def test_trainable_bias_attention_equals_keras_attention(scale, bias_batch, with_mask):
    """TorchOps.attention with a bias that requires a gradient (T5's positions in training,
    `_BiasedAttention`) against keras.ops.dot_product_attention: the value and the
    gradients of q, k, v and the broadcast bias, with and without a padding mask."""
    import torch

    from keras_bigmodels.backend import torch_backend

    rng = np.random.default_rng(6)
    arrays = [rng.normal(size=(2, 5, 3, 4)).astype("float32"),
              rng.normal(size=(2, 7, 3, 4)).astype("float32"),
              rng.normal(size=(2, 7, 3, 4)).astype("float32"),
              rng.normal(size=(bias_batch, 3, 5, 7)).astype("float32")]
    mask = None
    if with_mask:
        mask = np.ones((2, 1, 1, 7), bool)
        mask[1, ..., 4:] = False
    probe = torch.tensor(rng.normal(size=(2, 5, 3, 4)), dtype=torch.float32)

    def plain(q, k, v, bias):
        if mask is not None:
            bias = torch.where(torch.tensor(mask), bias, MASK_VALUE)
        return (keras.ops.dot_product_attention(q, k, v, bias=bias, scale=scale)
                * probe).sum()

    calls = []
    original = torch_backend._BiasedAttention.apply

    def fast(q, k, v, bias):
        out = torch_backend.TorchOps.attention(
            q, k, v, scale, mask=None if mask is None else torch.tensor(mask), bias=bias,
            mask_value=MASK_VALUE)
        return (out * probe).sum()

    expected_value, expected_grads = _torch_value_and_gradients(plain, *arrays)
    torch_backend._BiasedAttention.apply = lambda *a: calls.append(1) or original(*a)
    try:
        value, grads = _torch_value_and_gradients(fast, *arrays)
    finally:
        torch_backend._BiasedAttention.apply = original
    assert calls == [1]
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, expected_grads):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@torch_only
def test_rms_norm_kernel_gradients_equal_keras_layer():
    """The RMSNormalization kernel (`_RMSNorm` when differentiated) against the Keras
    layer's own call: value and the gradients of the input and the scale."""
    import torch

    from keras_bigmodels.backend import torch_backend

    layer = keras.layers.RMSNormalization(epsilon=1e-6)
    layer.build((None, 8))
    rng = np.random.default_rng(7)
    layer.scale.assign(rng.normal(size=(8,)).astype("float32"))
    x = rng.normal(size=(3, 5, 8)).astype("float32") * 3
    probe = torch.tensor(rng.normal(size=(3, 5, 8)), dtype=torch.float32)
    results = []
    for call in (layer.call, lambda t: torch_backend.rms_norm(layer, t)):
        tensor = torch.tensor(x, requires_grad=True)
        out = call(tensor)
        grads = torch.autograd.grad((out * probe).sum(), [tensor, layer.scale.value])
        results.append((out.detach().numpy(), [g.numpy() for g in grads]))
    (expected, expected_grads), (got, grads) = results
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, expected_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # decoding keeps the composite form
        np.testing.assert_allclose(torch_backend.rms_norm(layer, torch.tensor(x)).numpy(),
                                   expected, rtol=1e-6, atol=1e-6)
