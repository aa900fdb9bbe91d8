"""FusedAdamW: keras.optimizers.AdamW's updates, through one fused kernel on torch."""

import keras
import numpy as np
import pytest

from keras_bigmodels.optimizers import FusedAdamW
from tests.testing import to_numpy


def _run(optimizer, steps=4):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (3, 2, 4)]
    variables = [keras.Variable(rng.normal(size=s).astype("float32"), name=f"w{i}")
                 for i, s in enumerate(shapes)]
    for _ in range(steps):
        # Gradients of very different scales, so that epsilon's placement shows.
        grads = [keras.ops.convert_to_tensor(
            (rng.normal(size=s) * scale).astype("float32"))
            for s, scale in zip(shapes, (1.0, 1e-6, 1e-3))]
        optimizer.apply(grads, variables)
    return [to_numpy(v) for v in variables]


@pytest.mark.parametrize("kwargs", [dict(weight_decay=0.004),
                                    dict(weight_decay=0.1, clipnorm=0.5, epsilon=1e-3)])
def test_fused_adamw_equals_keras_adamw(kwargs):
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)
    expected = _run(keras.optimizers.AdamW(schedule, **kwargs))
    got = _run(FusedAdamW(schedule, **kwargs))
    moved = _run(keras.optimizers.AdamW(schedule, **kwargs), steps=0)
    for a, b, before in zip(got, expected, moved):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert np.abs(a - before).max() > 1e-4


def test_fused_adamw_config_and_errors():
    optimizer = FusedAdamW(3e-4, weight_decay=0.01, beta_2=0.98)
    restored = FusedAdamW.from_config(optimizer.get_config())
    assert isinstance(restored, FusedAdamW) and restored.beta_2 == 0.98
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).beta_2 == 0.98
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdamW(amsgrad=True)
