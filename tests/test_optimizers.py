"""FusedAdamW: keras.optimizers.AdamW's updates, fused on torch (one kernel) and TensorFlow (one
XLA-compiled function)."""

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


@pytest.mark.parametrize("kwargs", [
    dict(weight_decay=0.004),
    dict(weight_decay=0.1, clipnorm=0.5, epsilon=1e-3),
    dict(weight_decay=0.05, gradient_accumulation_steps=2, use_ema=True),
    dict(weight_decay=0.05, exclude=["w1"]),
    dict(weight_decay=0.0, constant_learning_rate=True),
])
def test_fused_adamw_equals_keras_adamw(kwargs):
    kwargs = dict(kwargs)
    exclude = kwargs.pop("exclude", None)
    schedule = (1e-3 if kwargs.pop("constant_learning_rate", False)
                else keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5))

    def make(cls):
        optimizer = cls(schedule, **kwargs)
        if exclude:
            optimizer.exclude_from_weight_decay(var_names=exclude)
        return optimizer

    expected = _run(make(keras.optimizers.AdamW))
    got = _run(make(FusedAdamW))
    moved = _run(make(keras.optimizers.AdamW), steps=0)
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


def test_fused_adamw_takes_the_fused_update_on_tensorflow_and_torch(monkeypatch):
    # The fused path must be the one that runs (the equality above would also hold if the
    # optimizer silently fell back to Keras' update); Keras' per-weight update is disabled.
    from keras_bigmodels import backend

    if backend.name() == "jax":
        pytest.skip("JAX's compiled step fuses Keras' update itself: FusedAdamW is AdamW")

    def refuse(*args, **kwargs):
        raise AssertionError("Keras' per-weight update ran")

    monkeypatch.setattr(keras.optimizers.AdamW, "update_step", refuse)
    got = _run(FusedAdamW(1e-2, weight_decay=0.01), steps=2)
    assert all(np.isfinite(v).all() for v in got)


@pytest.mark.parametrize("embedding", [False, True])
def test_fused_adamw_trains_a_model_with_fit(embedding):
    # Through the trainer's compiled step (a traced graph on TensorFlow): the loss falls as
    # with Keras' AdamW. With an embedding (a sparse gradient on TensorFlow, its ids
    # repeated) only the fall is compared: Keras' TensorFlow Adam differs there (below).
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, size=(64, 4))
    y = (x.sum(axis=1) > 30).astype("int32")  # learnable from either input
    losses = {}
    for name, optimizer in (("keras", keras.optimizers.AdamW(1e-2, weight_decay=0.01)),
                            ("fused", FusedAdamW(1e-2, weight_decay=0.01))):
        keras.utils.set_random_seed(0)
        first = ([keras.Input((4,), dtype="int32"), keras.layers.Embedding(16, 8),
                  keras.layers.Flatten()] if embedding
                 else [keras.Input((4,)), keras.layers.Dense(16)])
        model = keras.Sequential(first + [keras.layers.Dense(16, activation="relu"),
                                          keras.layers.Dense(2)])
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        history = model.fit(x if embedding else x.astype("float32") / 8, y, batch_size=16,
                            epochs=8, shuffle=False, verbose=0)
        losses[name] = history.history["loss"]
    assert losses["fused"][-1] < 0.8 * losses["fused"][0]
    assert losses["keras"][-1] < 0.8 * losses["keras"][0]
    if not embedding:
        np.testing.assert_allclose(losses["fused"], losses["keras"], rtol=1e-4)


def test_fused_adamw_sums_repeated_rows_of_a_sparse_gradient_first():
    # An embedding's gradient on TensorFlow is `tf.IndexedSlices` whose ids repeat. Adam's
    # second moment is of the summed gradient, (g1 + g2)^2, as Keras' JAX and torch
    # updates (dense gradients) and torch.optim.AdamW compute it; Keras' TensorFlow Adam
    # squares each slice before the rows are summed (g1^2 + g2^2). FusedAdamW densifies
    # first: equal to Keras' AdamW given the dense gradient.
    from keras_bigmodels import backend

    if backend.name() != "tensorflow":
        pytest.skip("sparse (IndexedSlices) gradients are TensorFlow's")
    import tensorflow as tf

    def run(optimizer, dense):
        variable = keras.Variable(np.ones((4, 3), "float32"))
        for _ in range(2):
            grad = tf.IndexedSlices(tf.constant([[1.0, 2, 3], [4, 5, 6]]),
                                    tf.constant([0, 0]), tf.constant([4, 3]))
            optimizer.apply([tf.convert_to_tensor(grad) if dense else grad], [variable])
        return variable.numpy()

    expected = run(keras.optimizers.AdamW(1e-2, weight_decay=0.01), dense=True)
    np.testing.assert_allclose(run(FusedAdamW(1e-2, weight_decay=0.01), dense=False),
                               expected, rtol=1e-6)
    # What Keras' own update does with the slices (documented in FusedAdamW).
    keras_sparse = run(keras.optimizers.AdamW(1e-2, weight_decay=0.01), dense=False)
    assert np.abs(keras_sparse - expected).max() > 1e-3
