"""The backend boundary: only keras_bigmodels/backend/ imports jax, tensorflow or torch, and
every registered eager-decoding kernel equals its layer's own Keras call."""

import ast
import pathlib

import keras
import numpy as np
import pytest

import keras_bigmodels

BACKENDS = ("jax", "tensorflow", "torch")
PACKAGE = pathlib.Path(keras_bigmodels.__file__).parent


def _imported_roots(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_only_the_backend_package_imports_a_backend():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "backend":
            continue
        for root, line in _imported_roots(ast.parse(path.read_text(), str(path))):
            if root in BACKENDS:
                offenders.append(f"{relative}:{line} imports {root}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_an_import():
    tree = ast.parse("def f():\n    import torch.nn as nn\nfrom jax import numpy\n")
    assert sorted(r for r, _ in _imported_roots(tree)) == ["jax", "torch"]


def _kernel_cases():
    rng = np.random.default_rng(0)
    dense = keras.layers.Dense(6)
    dense_bias_free = keras.layers.Dense(6, use_bias=False)
    dense_relu = keras.layers.Dense(6, activation="relu")  # the kernel declines: full call
    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    norm_no_center = keras.layers.LayerNormalization(epsilon=1e-3, center=False)
    rms = keras.layers.RMSNormalization(epsilon=1e-6)
    dropout = keras.layers.Dropout(0.5)  # not training: the identity
    cases = []
    for layer in (dense, dense_bias_free, dense_relu, norm, norm_no_center, rms, dropout):
        x = rng.normal(size=(2, 3, 5)).astype("float32")
        layer.build(x.shape)
        for weight in layer.weights:  # away from the zeros/ones defaults
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
        cases.append((layer, x))
    # Image layers (a UNet's stem and head in torch's eager sampling): NHWC inputs.
    for layer in (keras.layers.Conv2D(6, 3, padding="same"),
                  keras.layers.Conv2D(6, 1, use_bias=False),
                  keras.layers.Conv2D(6, 3, strides=2, padding="same"),  # declines
                  keras.layers.GroupNormalization(groups=2, epsilon=1e-5)):
        x = rng.normal(size=(2, 6, 5, 4)).astype("float32")
        layer.build(x.shape)
        for weight in layer.weights:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
        cases.append((layer, x))
    return cases


def test_registered_kernels_equal_the_layers():
    from keras_bigmodels.backend import decoding

    kernels = decoding.registered_kernels(keras.backend.backend())
    if keras.backend.backend() == "torch":
        assert {keras.layers.Dense, keras.layers.LayerNormalization,
                keras.layers.RMSNormalization} <= set(kernels)
    covered = set()
    for layer, x in _kernel_cases():
        expected = keras.ops.convert_to_numpy(layer(x))
        with decoding.eager_decoding():
            got = decoding.invoke(layer, keras.ops.convert_to_tensor(x))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-5,
                                   err_msg=type(layer).__name__)
        covered.add(type(layer))
    assert set(kernels) <= covered, f"kernels without an equivalence case: {set(kernels) - covered}"


def test_dropout_kernel_declines_when_training():
    from keras_bigmodels.backend import decoding

    layer = keras.layers.Dropout(0.5, seed=0)
    x = keras.ops.ones((4, 64))
    with decoding.eager_decoding(training=True):
        out = keras.ops.convert_to_numpy(decoding.invoke(layer, x, training=True))
    assert (out == 0).any() and (out == 2).any()  # Keras' dropout ran, scaled by 1/(1-rate)


def test_in_place_writes_only_into_owned_caches():
    from keras_bigmodels.backend import decoding

    ops = keras.ops
    update = ops.ones((1, 2))
    with decoding.eager_decoding():
        mine = ops.zeros((1, 4))
        result = decoding.write_in_place(mine, 1, 1, update)
        np.testing.assert_array_equal(ops.convert_to_numpy(mine), np.zeros((1, 4)))
        np.testing.assert_array_equal(ops.convert_to_numpy(result), [[0, 1, 1, 0]])
        owned = decoding.own(ops.zeros((1, 4)))
        result = decoding.write_in_place(owned, 1, 2, update)
        np.testing.assert_array_equal(ops.convert_to_numpy(result), [[0, 0, 1, 1]])
        if keras.backend.backend() == "torch":
            assert result is owned  # written in place: no copy per step


@pytest.mark.parametrize("name", ["compile_function", "materialize"])
def test_backend_api_is_available(name):
    from keras_bigmodels import backend

    assert callable(getattr(backend, name))
