"""The UNet's speed mechanisms equal the Keras layers they stand for (issue 17).

`ImageConv2D` / `ImageGroupNormalization` run `backend.image_kernels()` (torch's own conv and
group norm on NCHW views of NHWC tensors; JAX's conv with a matmul kernel gradient) and
`ProjectedAttention` takes its `attention` (torch SDPA on strided views) or the fused
`keras.ops.dot_product_attention` where that is the faster form; each must give the outputs
(and on torch and JAX the gradients) of the Keras layer or formula it replaces, and on torch
the direct kernels must actually be taken.
"""

import keras
import numpy as np
import pytest

from keras_bigmodels import backend
from keras_bigmodels.layers import unet
from keras_bigmodels.layers.unet import ImageConv2D, ImageGroupNormalization, ProjectedAttention
from tests.testing import assert_close, assert_layer_roundtrip, to_numpy

ON_TORCH = keras.backend.backend() == "torch"
ON_JAX = keras.backend.backend() == "jax"


class _CountingKernels:
    """`backend.image_kernels()` with a count of the calls per kernel."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.calls = {"conv2d": 0, "group_norm": 0}

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)
        if kernel is None:  # the backend has no kernel for it: the Keras form
            return None

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return kernel(*args, **kwargs)
        return counted


@pytest.fixture
def counting(monkeypatch):
    real = backend.image_kernels()
    if real is None:
        return None
    counter = _CountingKernels(real)
    monkeypatch.setattr(backend, "image_kernels", lambda: counter)
    return counter


def _images(shape, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    # An offset and a spread per channel, so a wrong normalization axis shows.
    return (rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1])
            + rng.normal(size=shape[-1])).astype(dtype)


def _twin(layer, reference, inputs):
    layer(inputs)
    reference(inputs)
    rng = np.random.default_rng(1)
    for variable, ref in zip(layer.weights, reference.weights):
        value = rng.normal(size=variable.shape).astype("float32")
        if "gamma" in variable.path:
            value = 1.0 + 0.3 * value  # a non-default scale
        variable.assign(value)
        ref.assign(value)


CONV_CASES = [
    dict(filters=16, kernel_size=3, padding="same"),
    dict(filters=8, kernel_size=1, padding="valid"),
    dict(filters=16, kernel_size=3, strides=2, padding="valid"),
    dict(filters=4, kernel_size=(3, 5), padding="same", use_bias=False),
    # Not a plain conv: the Keras call (strided "same" pads asymmetrically).
    dict(filters=8, kernel_size=3, strides=2, padding="same", direct=False),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_image_conv_equals_keras_conv(case, counting):
    case = dict(case)
    direct = case.pop("direct", True)
    inputs = _images((2, 10, 12, 8))
    layer, reference = ImageConv2D(**case), keras.layers.Conv2D(**case)
    _twin(layer, reference, inputs)
    if counting is not None:
        counting.calls["conv2d"] = 0
    actual = to_numpy(layer(inputs))
    assert actual.shape == tuple(reference.compute_output_shape(inputs.shape))
    assert_close(actual, reference(inputs), atol=2e-5, rtol=1e-5)
    if counting is not None:
        assert counting.calls["conv2d"] == (1 if direct else 0)


@pytest.mark.parametrize("groups,scale,center", [(4, True, True), (2, False, True),
                                                 (8, True, False)])
def test_image_group_norm_equals_keras_group_norm(groups, scale, center, counting):
    inputs = _images((2, 6, 5, 16))
    kwargs = dict(groups=groups, epsilon=1e-5, scale=scale, center=center)
    layer = ImageGroupNormalization(**kwargs)
    reference = keras.layers.GroupNormalization(**kwargs)
    _twin(layer, reference, inputs)
    assert_close(layer(inputs), reference(inputs), atol=2e-5, rtol=1e-5)
    if counting is not None and counting.kernels.group_norm is not None:
        assert counting.calls["group_norm"] == 2  # build call and this one


def test_image_layers_under_mixed_precision():
    inputs = _images((2, 8, 8, 8))
    for make in (lambda cls: cls(8, 3, padding="same", dtype="mixed_bfloat16"),):
        layer, reference = make(ImageConv2D), make(keras.layers.Conv2D)
        _twin(layer, reference, inputs)
        out = layer(inputs)
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert_close(keras.ops.cast(out, "float32"),
                     keras.ops.cast(reference(inputs), "float32"), atol=0.15, rtol=0.03)
    layer = ImageGroupNormalization(groups=4, dtype="mixed_bfloat16")
    reference = keras.layers.GroupNormalization(groups=4, dtype="mixed_bfloat16")
    _twin(layer, reference, inputs)
    out = layer(inputs)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert_close(keras.ops.cast(out, "float32"), keras.ops.cast(reference(inputs), "float32"),
                 atol=0.05, rtol=0.02)


@pytest.mark.skipif(not ON_TORCH, reason="the direct kernels exist on torch only")
def test_direct_kernels_have_the_keras_gradients():
    import torch

    inputs = _images((2, 8, 8, 8))
    pairs = [(ImageConv2D(8, 3, padding="same"), keras.layers.Conv2D(8, 3, padding="same")),
             (ImageGroupNormalization(groups=4), keras.layers.GroupNormalization(groups=4))]
    for layer, reference in pairs:
        _twin(layer, reference, inputs)
        gradients = []
        for module in (layer, reference):
            x = torch.tensor(inputs, requires_grad=True)
            weight = torch.tensor(_images((2, 8, 8, 8), seed=3))  # a non-uniform upstream
            (module(x) * weight).sum().backward()
            gradients.append([x.grad.numpy()] + [v.value.grad.numpy() for v in module.weights])
            for v in module.weights:
                v.value.grad = None
        for actual, expected in zip(*gradients):
            np.testing.assert_allclose(actual, expected, atol=5e-5, rtol=1e-4)


def test_image_kernels_exist_exactly_on_torch_and_jax():
    kernels = backend.image_kernels()
    assert (kernels is not None) == (ON_TORCH or ON_JAX)
    if ON_JAX:  # a conv only: group norm and attention stay the Keras forms
        assert kernels.group_norm is None and kernels.attention is None


@pytest.mark.skipif(not ON_JAX, reason="the matmul kernel gradient is JAX's")
@pytest.mark.parametrize("case", [dict(filters=16, kernel_size=3, padding="same"),
                                  dict(filters=8, kernel_size=1, padding="valid"),
                                  dict(filters=8, kernel_size=3, padding="valid"),
                                  dict(filters=4, kernel_size=(3, 5), padding="same"),
                                  dict(filters=16, kernel_size=3, strides=2, padding="valid")])
def test_jax_conv_has_the_keras_gradients(case, monkeypatch):
    import jax
    from keras_bigmodels.backend import jax_backend

    # These small images take XLA's own kernel gradient by the size rule; 0 thresholds make
    # every stride-1 conv take the matmul one, which is the path under test.
    monkeypatch.setattr(jax_backend.ImageOps, "min_pixels", 0)
    monkeypatch.setattr(jax_backend.ImageOps, "min_channel_product", 0)
    inputs = _images((2, 10, 12, 8))
    layer, reference = ImageConv2D(**case), keras.layers.Conv2D(**case)
    _twin(layer, reference, inputs)
    upstream = _images(tuple(reference.compute_output_shape(inputs.shape)), seed=3)

    def gradients(module):
        def loss(values, x):
            with keras.StatelessScope(state_mapping=list(zip(module.weights, values))):
                return keras.ops.sum(module(x) * upstream)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))([v.value for v in module.weights],
                                                       inputs)

    (actual_weights, actual_x), (expected_weights, expected_x) = (gradients(layer),
                                                                  gradients(reference))
    assert np.abs(np.asarray(expected_weights[0])).max() > 1.0
    np.testing.assert_allclose(actual_x, expected_x, atol=5e-5, rtol=1e-4)
    for actual, expected in zip(actual_weights, expected_weights):
        np.testing.assert_allclose(actual, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.skipif(not ON_JAX, reason="the matmul kernel gradient is JAX's")
def test_jax_matmul_kernel_gradient_only_where_it_pays():
    from keras_bigmodels.backend import jax_backend

    pays = jax_backend.ImageOps.matmul_kernel_gradient_pays
    assert pays((16, 32, 32, 128), (3, 3, 128, 128))
    assert pays((4, 64, 64, 192), (3, 3, 192, 128))
    assert not pays((16, 16, 16, 256), (3, 3, 256, 128))  # small image
    assert not pays((16, 32, 32, 64), (3, 3, 64, 3))  # few channels
    assert not pays((16, None, None, 128), (3, 3, 128, 128))  # unknown size


@pytest.mark.parametrize("context_dim", [None, 12])
def test_projected_attention_fused_equals_explicit(context_dim, monkeypatch):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(2, 9, 16)).astype("float32")
    context = None if context_dim is None else rng.normal(size=(2, 5, 12)).astype("float32")
    layer = ProjectedAttention(2, 8, context_dim=context_dim)
    layer(inputs, context)
    for variable in layer.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    outputs = {}
    # The backend's direct kernel (torch), then keras.ops' fused call, then the einsums.
    outputs["direct"] = to_numpy(layer(inputs, context))
    monkeypatch.setattr(backend, "image_kernels", lambda: None)
    for fused in (True, False):
        monkeypatch.setattr(unet, "fused_by_default", lambda fused=fused: fused)
        outputs[fused] = to_numpy(layer(inputs, context))
    assert np.abs(outputs[False]).max() > 1.0  # the weights are not trivially small
    np.testing.assert_allclose(outputs[True], outputs[False], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(outputs["direct"], outputs[False], atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not ON_TORCH, reason="the direct kernels exist on torch only")
def test_direct_attention_has_the_explicit_gradients(monkeypatch):
    import torch

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(2, 9, 16)).astype("float32")
    layer = ProjectedAttention(2, 8)
    layer(inputs)
    gradients = []
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(backend, "image_kernels", lambda: None)
            monkeypatch.setattr(unet, "fused_by_default", lambda: False)
        x = torch.tensor(inputs, requires_grad=True)
        (layer(x) * torch.tensor(inputs)).sum().backward()
        gradients.append([x.grad.numpy()] + [v.value.grad.numpy() for v in layer.weights])
        for v in layer.weights:
            v.value.grad = None
    for actual, expected in zip(*gradients):
        np.testing.assert_allclose(actual, expected, atol=5e-5, rtol=1e-4)


def test_image_layers_roundtrip(tmp_path):
    images = _images((1, 4, 4, 8))
    assert_layer_roundtrip(ImageConv2D(4, 3, padding="same"), images, tmp_path)
    assert_layer_roundtrip(ImageGroupNormalization(groups=4), images, tmp_path)


def test_unet_under_eager_decoding_skips_layer_calls_and_equals_its_call(monkeypatch):
    """torch's sampling loop runs the UNet inside `eager_decoding()`, where blocks call their
    sublayers through `invoke` (their `call` directly): same outputs, far fewer
    `Layer.__call__`s."""
    from keras_bigmodels.backend.decoding import eager_decoding
    from keras_bigmodels.models.diffusion import UNet2D

    unet_model = UNet2D(block_out_channels=(16, 32), attention_levels=(False, True),
                        layers_per_block=1, attention_head_dim=8, norm_num_groups=4,
                        num_classes=3)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), np.array([3, 700], "int32"),
              np.array([0, 2], "int32")]
    inputs = [keras.ops.convert_to_tensor(x) for x in inputs]
    expected = to_numpy(unet_model(inputs))
    calls = {"count": 0}
    original = keras.layers.Layer.__call__

    def counted(self, *args, **kwargs):
        calls["count"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counted)
    unet_model(inputs)
    plain, calls["count"] = calls["count"], 0
    with eager_decoding():
        actual = to_numpy(unet_model(inputs))
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    # The model's own call, plus the few layers called inside others' `call`s.
    assert calls["count"] * 4 < plain, (calls["count"], plain)


def test_unet_keeps_the_weight_paths_of_files_saved_before(tmp_path):
    """A .keras file names a model's layers that sort after its `layers` attribute by
    class (numbered per class): the UNet's stem and head stay Keras' Conv2D and
    GroupNormalization so files saved before ImageConv2D existed still load."""
    import zipfile

    import h5py

    from keras_bigmodels.models.diffusion import UNet2D

    unet_model = UNet2D(block_out_channels=(16, 32), attention_levels=(False, True),
                        layers_per_block=1, attention_head_dim=8, norm_num_groups=4)
    path = str(tmp_path / "unet.keras")
    unet_model.save(path)
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", str(tmp_path))
    with h5py.File(str(tmp_path / "model.weights.h5")) as weights:
        top = sorted(name for name in weights["layers"].keys())
        assert set(weights.keys()) >= {"input_conv", "layers"}
    assert {"conv2d_1", "group_normalization"} <= set(top), top
    assert not [name for name in top if name.startswith("image_")], top


@pytest.mark.skipif(not ON_TORCH, reason="eager_training() is a no-op on JAX and TensorFlow")
def test_diffusion_train_step_in_eager_training_equals_the_keras_step(monkeypatch):
    """DiffusionModel's train step runs in `eager_training()` (torch): one step from the
    same weights and seed gives the loss and the updated weights of the plain Keras step."""
    import contextlib

    from keras_bigmodels.models import base as tasks  # EagerTrainingStep's eager_training
    from keras_bigmodels.models.diffusion import DiffusionModel, UNet2D

    entered = {"count": 0}
    real = tasks.eager_training

    def counted(enabled=True):
        entered["count"] += 1
        return real(enabled)

    def make():
        unet_model = UNet2D(block_out_channels=(16, 32), attention_levels=(False, True),
                            layers_per_block=1, attention_head_dim=8, norm_num_groups=4)
        model = DiffusionModel(unet_model, image_shape=(8, 8, 3), ema_decay=None, seed=0)
        # Plain SGD at rate 1: the weight change is the gradient itself. (AdamW's first
        # step is ~lr * sign(g), which turns a tiny gradient difference near g = 0 into a
        # visible one: 1 of 2,304 weights off by 2.4e-5 on an Intel Xeon host.)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        return model

    images = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    fast, plain = make(), make()
    initial = fast.get_weights()
    plain.set_weights(initial)
    monkeypatch.setattr(tasks, "eager_training", counted)
    fast_loss = fast.train_on_batch(images, return_dict=True)["loss"]
    assert entered["count"] >= 1
    monkeypatch.setattr(tasks, "eager_training", lambda enabled=True: contextlib.nullcontext())
    plain_loss = plain.train_on_batch(images, return_dict=True)["loss"]
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
    for a, b in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
    # The step moved the weights (so equal weights are not two untouched copies).
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(fast.get_weights(), initial))
