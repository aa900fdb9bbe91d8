"""DiffusionModel: training, sampling, guidance, EMA and saving on tiny denoisers."""

import os

import keras
import numpy as np
import pytest

from keras_bigmodels.data.images import load_digits
from keras_bigmodels.models.diffusion import DiffusionModel, DiT, UNet2D


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data["x_train"][:128], data["y_train"][:128]


def tiny_unet(num_classes=None):
    return UNet2D(in_channels=1, out_channels=1, block_out_channels=(16, 16),
                  attention_levels=(False, False), layers_per_block=1, norm_num_groups=4,
                  mid_block_attention=False, num_classes=num_classes)


def tiny_dit(num_classes=None):
    return DiT(image_size=8, patch_size=2, in_channels=1, hidden_dim=32, num_layers=2,
               num_heads=2, num_classes=num_classes, frequency_dim=32)


def _weights(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


@pytest.mark.parametrize("denoiser,prediction_type", [("unet", "v_prediction"),
                                                      ("dit", "epsilon")])
def test_loss_falls_on_digits(digits, denoiser, prediction_type):
    images, labels = digits
    network = tiny_unet(11) if denoiser == "unet" else tiny_dit(11)
    model = DiffusionModel(network, (8, 8, 1), num_classes=10, num_train_timesteps=100,
                           prediction_type=prediction_type, learning_rate=4e-3, seed=1)
    history = model.fit(images, labels, batch_size=32, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.75 * losses[0], losses


def test_generate_shapes_determinism_and_rows(digits):
    model = DiffusionModel(tiny_unet(), (8, 8, 1), num_train_timesteps=50, seed=0)
    first = model.generate(num_images=3, num_steps=5, seed=7)
    assert first.shape == (3, 8, 8, 1) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(model.generate(num_images=3, num_steps=5, seed=7), first)
    assert not np.allclose(model.generate(num_images=3, num_steps=5, seed=8), first)
    # Row i draws from [seed, i]: a smaller batch gives the same first rows.
    np.testing.assert_allclose(model.generate(num_images=2, num_steps=5, seed=7), first[:2],
                               atol=1e-5)
    ddpm = model.generate(num_images=2, num_steps=5, sampler="ddpm", seed=7)
    assert ddpm.shape == (2, 8, 8, 1) and not np.allclose(ddpm, first[:2])
    noisy = model.generate(num_images=2, num_steps=5, eta=1.0, seed=7)
    assert not np.allclose(noisy, first[:2])


def test_generate_compiles_one_loop():
    model = DiffusionModel(tiny_dit(), (8, 8, 1), num_train_timesteps=50)
    model.generate(num_images=2, num_steps=4, seed=0)
    model.generate(num_images=2, num_steps=4, seed=1)
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert model.sample_traces == 1
    else:
        assert model.sample_traces == 2


def test_classifier_free_guidance():
    keras.utils.set_random_seed(3)
    model = DiffusionModel(tiny_unet(11), (8, 8, 1), num_classes=10, num_train_timesteps=50)
    labels = [1, 4, 9]
    plain = model.generate(labels, num_steps=4, seed=0)
    guided = model.generate(labels, num_steps=4, guidance_scale=4.0, seed=0)
    assert not np.allclose(plain, guided, atol=1e-4)
    # Scale 0 is the null-class (unconditional) model, whatever the labels.
    unconditional = model.generate(labels, num_steps=4, guidance_scale=0.0, seed=0)
    null = model.generate(num_images=3, num_steps=4, seed=0)
    np.testing.assert_allclose(unconditional, null, atol=1e-4)
    assert not np.allclose(plain, null, atol=1e-4)
    # A row's image depends on its own label only.
    batch = model.generate(labels, num_steps=4, guidance_scale=4.0, seed=[10, 11, 12])
    single = model.generate([4], num_steps=4, guidance_scale=4.0, seed=[11])
    np.testing.assert_allclose(single[0], batch[1], atol=1e-4)


def test_condition_dropout_trains_the_null_class(digits):
    images, labels = digits
    keras.utils.set_random_seed(4)
    model = DiffusionModel(tiny_unet(11), (8, 8, 1), num_classes=10, num_train_timesteps=50,
                           condition_dropout=0.5, learning_rate=2e-3, seed=2)
    null_row = lambda: keras.ops.convert_to_numpy(  # noqa: E731
        model.denoiser.class_embedding.embeddings)[10].copy()
    before = null_row()
    model.fit(images[:64], labels[:64], batch_size=32, epochs=1, verbose=0)
    assert not np.allclose(null_row(), before)
    keras.utils.set_random_seed(4)
    without = DiffusionModel(tiny_unet(11), (8, 8, 1), num_classes=10, num_train_timesteps=50,
                             condition_dropout=0.0, learning_rate=2e-3, seed=2)
    before = keras.ops.convert_to_numpy(without.denoiser.class_embedding.embeddings)[10].copy()
    without.fit(images[:64], labels[:64], batch_size=32, epochs=1, verbose=0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(without.denoiser.class_embedding.embeddings)[10], before)


def test_ema_follows_the_weights(digits):
    images, _ = digits
    model = DiffusionModel(tiny_dit(), (8, 8, 1), num_train_timesteps=50, ema_decay=0.9,
                           seed=0)
    model.compile(keras.optimizers.SGD(0.5))
    variables = model.denoiser.trainable_variables
    w0 = _weights(variables)
    np.testing.assert_array_equal(_weights(model.ema_weights)[5], w0[5])
    model.train_on_batch(images[:16])
    w1 = _weights(variables)
    model.train_on_batch(images[:16])
    w2 = _weights(variables)
    ema = _weights(model.ema_weights)
    # The average trails one step: update 1 saw w0, update 2 saw w1, with the warm-up
    # decay min(0.9, (1 + n) / (10 + n)).
    decay = min(0.9, 3.0 / 12.0)
    changed = [i for i in range(len(w0)) if not np.allclose(w1[i], w0[i])]
    assert changed
    for i in changed:
        np.testing.assert_allclose(ema[i], decay * w0[i] + (1 - decay) * w1[i], atol=1e-6)
        assert not np.allclose(ema[i], w2[i])
    with_ema = model.generate(num_images=2, num_steps=3, seed=0)
    without_ema = model.generate(num_images=2, num_steps=3, seed=0, use_ema=False)
    assert not np.allclose(with_ema, without_ema)
    for before, after in zip(w2, _weights(variables)):  # generate restored the weights
        np.testing.assert_array_equal(before, after)


def test_config_and_keras_round_trip(digits, tmp_path):
    images, labels = digits
    model = DiffusionModel(tiny_unet(11), (8, 8, 1), num_classes=10, num_train_timesteps=50,
                           beta_schedule="cosine", prediction_type="v_prediction",
                           ema_decay=0.5, seed=3)
    model.fit(images[:32], labels[:32], batch_size=16, epochs=1, verbose=0)
    expected = model.generate([2, 5], num_steps=3, guidance_scale=2.0, seed=1)
    clone = DiffusionModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = os.path.join(str(tmp_path), "diffusion.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.denoiser, UNet2D)
    assert restored.schedule.beta_schedule == "cosine"
    np.testing.assert_allclose(restored.generate([2, 5], num_steps=3, guidance_scale=2.0,
                                                 seed=1), expected, atol=1e-5)
    for a, b in zip(_weights(restored.ema_weights), _weights(model.ema_weights)):
        np.testing.assert_array_equal(a, b)
    # The seed generator's state is saved too: the same loss on the same batch.
    restored_loss = restored.compute_loss(images[:16], labels[:16], training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored_loss),
        keras.ops.convert_to_numpy(model.compute_loss(images[:16], labels[:16],
                                                      training=False)), rtol=1e-5)
    restored.fit(images[:32], labels[:32], batch_size=16, epochs=1, verbose=0)  # resumes

    # Unconditional pixel model, sampled with DDPM (in-loop step noise).
    plain = DiffusionModel(tiny_dit(), (8, 8, 1), num_train_timesteps=50, seed=3)
    path = os.path.join(str(tmp_path), "plain.keras")
    plain.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.generate(num_images=2, num_steps=4, sampler="ddpm", seed=5),
        plain.generate(num_images=2, num_steps=4, sampler="ddpm", seed=5), atol=1e-5)


def test_ddpm_step_noise_is_drawn_in_the_loop(monkeypatch):
    """The compiled sampler gets the initial noise and one key per row, never the noise of
    every step ([num_steps, batch, ...]); rows still depend only on their seed."""
    import keras_bigmodels.models.diffusion.tasks as tasks

    sizes = []
    original = tasks.compile_function

    def recording(fn, variables):
        compiled = original(fn, variables)

        def call(*args):
            sizes.extend(int(np.prod(a.shape)) for a in keras.tree.flatten(args))
            return compiled(*args)

        return call

    monkeypatch.setattr(tasks, "compile_function", recording)
    model = DiffusionModel(tiny_unet(), (8, 8, 1), num_train_timesteps=50, seed=0)
    images = model.generate(num_images=3, num_steps=50, sampler="ddpm", seed=7)
    assert np.isfinite(images).all()
    assert max(sizes) == 3 * 8 * 8 * 1  # the initial noise is the largest input
    np.testing.assert_allclose(model.generate(num_images=1, num_steps=50, sampler="ddpm",
                                              seed=7), images[:1], atol=1e-5)
    assert not np.allclose(model.generate(num_images=1, num_steps=50, sampler="ddpm",
                                          seed=8), images[:1], atol=1e-3)


def test_bad_input(digits):
    images, labels = digits
    model = DiffusionModel(tiny_dit(11), (8, 8, 1), num_classes=10, num_train_timesteps=50)
    with pytest.raises(ValueError, match="num_steps"):
        model.generate([1], num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        model.generate([1], num_steps=51)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate([1], num_steps=2, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="labels"):
        model.generate([10], num_steps=2)
    with pytest.raises(ValueError, match="sampler"):
        model.generate([1], num_steps=2, sampler="euler")
    with pytest.raises(ValueError, match="image_shape"):
        DiffusionModel(tiny_dit(11), (8, 8, 3), num_classes=10)
    with pytest.raises(ValueError, match="image_shape"):
        DiffusionModel(tiny_unet(), (9, 9, 1))  # not divisible by the downsampling
    with pytest.raises(ValueError, match="image_shape"):
        DiffusionModel(tiny_dit(), (16, 16, 1))
    with pytest.raises(ValueError, match="num_classes"):
        DiffusionModel(tiny_dit(11), (8, 8, 1), num_classes=11)
    with pytest.raises(ValueError, match="x"):
        model.fit(np.zeros((4, 16, 16, 1), "float32"), labels[:4], verbose=0)
    with pytest.raises(ValueError, match="10"):
        model.fit(images[:4], np.array([0, 1, 2, 10]), verbose=0)
    unconditional = DiffusionModel(tiny_dit(), (8, 8, 1), num_train_timesteps=50)
    with pytest.raises(ValueError, match="labels"):
        unconditional.generate([1], num_steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        unconditional.generate(num_images=1, num_steps=2, guidance_scale=2.0)
