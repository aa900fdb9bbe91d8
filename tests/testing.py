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


def perturb_norms_and_biases(torch_model, scale=0.1, seed=0):
    """Move every norm weight and bias of a random-init transformers model off its default
    (ones / zeros), so that a swapped or skipped one shows in a parity test."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in torch_model.named_parameters():
            lowered = name.lower()
            # "ln_": GPT-2/GPT-1 name their layer norms ln_1, ln_2, ln_f.
            if "norm" in lowered or "ln_" in lowered or name.endswith("bias"):
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(scale * noise.to(parameter.dtype))
