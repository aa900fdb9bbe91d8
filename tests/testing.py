"""Helpers shared by the tests."""

import os

import keras
import numpy as np


def to_numpy(x):
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x)
    return keras.ops.convert_to_numpy(x)


def assert_close(actual, expected, atol=1e-4, rtol=1e-4):
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), atol=atol, rtol=rtol)


def assert_saved_model_matches(model, inputs, tmp_path, **call_kwargs):
    """get_config/from_config and .keras save/load both reproduce the outputs."""
    expected = to_numpy(model(inputs, **call_kwargs))
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    actual = to_numpy(restored(inputs, **call_kwargs))
    if isinstance(expected, dict):
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    return restored


def assert_layer_roundtrip(layer, inputs, tmp_path, **call_kwargs):
    """A layer rebuilt from its config with the same weights gives the same output, and a
    .keras save of a model wrapping it loads back identically."""
    expected = to_numpy(layer(inputs, **call_kwargs))
    clone = layer.__class__.from_config(layer.get_config())
    clone(inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(inputs, **call_kwargs)), expected, atol=1e-6)
    return clone


def backend():
    return keras.backend.backend()
