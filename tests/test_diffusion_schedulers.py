"""Noise schedules and sampler steps against diffusers' DDPMScheduler / DDIMScheduler."""

import keras
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from keras_bigmodels.backend import compile_function
from keras_bigmodels.generation.diffusion import (DiffusionSampler, inference_timesteps,
                                                  keyed_normal, keyed_normal_numpy,
                                                  sampling_noise)
from keras_bigmodels.objectives.diffusion import NoiseSchedule

SCHEDULES = [
    dict(beta_schedule="linear"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
]


def _diffusers_schedule_kwargs(kwargs, num_train_timesteps=1000):
    return dict(num_train_timesteps=num_train_timesteps, **kwargs)


@pytest.mark.parametrize("kwargs", SCHEDULES, ids=lambda k: k["beta_schedule"])
def test_schedules_equal_diffusers(kwargs):
    reference = DDPMScheduler(**_diffusers_schedule_kwargs(kwargs))
    ours = NoiseSchedule(1000, **kwargs)
    np.testing.assert_allclose(ours.betas, reference.betas.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.alphas_cumprod, reference.alphas_cumprod.numpy(),
                               rtol=1e-5, atol=1e-8)


def test_cosine_alias_and_bad_arguments():
    np.testing.assert_array_equal(NoiseSchedule(50, "cosine").betas,
                                  NoiseSchedule(50, "squaredcos_cap_v2").betas)
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        NoiseSchedule(0)
    with pytest.raises(ValueError, match="sampler"):
        DiffusionSampler(NoiseSchedule(10), "euler")
    with pytest.raises(ValueError, match="eta"):
        DiffusionSampler(NoiseSchedule(10), "ddim", eta=-0.5)
    with pytest.raises(ValueError, match="num_steps"):
        inference_timesteps(10, 11)
    with pytest.raises(ValueError, match="num_steps"):
        inference_timesteps(10, 0)


def test_add_noise_and_velocity_equal_diffusers():
    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    schedule = NoiseSchedule(1000, "squaredcos_cap_v2")
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((4, 3, 5, 5)).astype("float32")
    noise = rng.standard_normal((4, 3, 5, 5)).astype("float32")
    t = np.array([0, 10, 500, 999])
    expected = reference.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                   torch.from_numpy(t)).numpy()
    actual = keras.ops.convert_to_numpy(schedule.add_noise(
        keras.ops.convert_to_tensor(x0), keras.ops.convert_to_tensor(noise),
        keras.ops.convert_to_tensor(t, "int32")))
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    expected_v = reference.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise),
                                        torch.from_numpy(t)).numpy()
    actual_v = keras.ops.convert_to_numpy(schedule.target(
        "v_prediction", keras.ops.convert_to_tensor(x0), keras.ops.convert_to_tensor(noise),
        keras.ops.convert_to_tensor(t, "int32")))
    np.testing.assert_allclose(actual_v, expected_v, atol=1e-5)
    assert not np.allclose(actual_v, noise)  # a swapped target would show


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [1, 7, 50, 1000])
def test_inference_timesteps_equal_diffusers(spacing, num_steps):
    reference = DDIMScheduler(timestep_spacing=spacing)
    reference.set_timesteps(num_steps)
    np.testing.assert_array_equal(inference_timesteps(1000, num_steps, spacing),
                                  reference.timesteps.numpy())


def _inputs(shape=(2, 3, 6, 6), seed=0, scale=1.5):
    rng = np.random.default_rng(seed)
    sample = (scale * rng.standard_normal(shape)).astype("float32")
    output = rng.standard_normal(shape).astype("float32")
    noise = rng.standard_normal(shape).astype("float32")
    return sample, output, noise


def _ours(sampler, output, t, prev, sample, noise):
    result = sampler.step(keras.ops.convert_to_tensor(output), t, prev,
                          keras.ops.convert_to_tensor(sample),
                          keras.ops.convert_to_tensor(noise))
    return [keras.ops.convert_to_numpy(r) for r in result]


DDPM_CASES = [
    dict(),
    dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"),
    dict(clip_sample=False, variance_type="fixed_large"),
    dict(thresholding=True, sample_max_value=2.5, dynamic_thresholding_ratio=0.9),
    dict(timestep_spacing="trailing", beta_schedule="scaled_linear", beta_start=0.00085,
         beta_end=0.012),
]


@pytest.mark.parametrize("case", range(len(DDPM_CASES)))
@pytest.mark.parametrize("num_steps", [None, 10])
def test_ddpm_step_equals_diffusers(case, num_steps):
    kwargs = DDPM_CASES[case]
    reference = DDPMScheduler(**kwargs)
    schedule_keys = ("beta_schedule", "beta_start", "beta_end")
    schedule = NoiseSchedule(1000, **{k: v for k, v in kwargs.items() if k in schedule_keys})
    sampler = DiffusionSampler(schedule, "ddpm",
                               **{k: v for k, v in kwargs.items() if k not in schedule_keys})
    steps = num_steps or 1000
    if num_steps is not None:
        reference.set_timesteps(num_steps)
    timesteps, previous = sampler.timesteps(steps)
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
    for index in sorted({0, 1, steps // 2, steps - 1}):
        t = int(timesteps[index])
        sample, output, noise = _inputs(seed=index)
        generator = torch.Generator().manual_seed(index)
        expected_noise = torch.randn(sample.shape, generator=generator)
        expected = reference.step(torch.from_numpy(output), t, torch.from_numpy(sample),
                                  generator=torch.Generator().manual_seed(index))
        actual, x0 = _ours(sampler, output, t, int(previous[index]), sample,
                           expected_noise.numpy())
        np.testing.assert_allclose(x0, expected.pred_original_sample.numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(actual, expected.prev_sample.numpy(), atol=1e-5, rtol=1e-5)


DDIM_CASES = [
    dict(),
    dict(eta=0.5),
    dict(eta=1.0, timestep_spacing="trailing", prediction_type="v_prediction"),
    dict(set_alpha_to_one=False, clip_sample=False, beta_schedule="scaled_linear",
         beta_start=0.00085, beta_end=0.012, steps_offset=1),
    dict(thresholding=True, sample_max_value=2.0, eta=0.3),
    dict(prediction_type="sample", timestep_spacing="linspace"),
]


@pytest.mark.parametrize("case", range(len(DDIM_CASES)))
@pytest.mark.parametrize("num_steps", [7, 50])
def test_ddim_step_equals_diffusers(case, num_steps):
    kwargs = dict(DDIM_CASES[case])
    eta = kwargs.pop("eta", 0.0)
    reference = DDIMScheduler(**kwargs)
    reference.set_timesteps(num_steps)
    schedule_keys = ("beta_schedule", "beta_start", "beta_end")
    schedule = NoiseSchedule(1000, **{k: v for k, v in kwargs.items() if k in schedule_keys})
    sampler = DiffusionSampler(schedule, "ddim", eta=eta,
                               **{k: v for k, v in kwargs.items() if k not in schedule_keys})
    timesteps, previous = sampler.timesteps(num_steps)
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
    for index in sorted({0, 1, num_steps // 2, num_steps - 1}):
        t = int(timesteps[index])
        sample, output, noise = _inputs(seed=index)
        expected = reference.step(torch.from_numpy(output), t, torch.from_numpy(sample),
                                  eta=eta, variance_noise=torch.from_numpy(noise))
        actual, x0 = _ours(sampler, output, t, int(previous[index]), sample, noise)
        np.testing.assert_allclose(x0, expected.pred_original_sample.numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(actual, expected.prev_sample.numpy(), atol=1e-5, rtol=1e-5)


def _toy_denoiser(x, t):
    """A fixed function of (x, t) standing in for a network: both loops must agree on it."""
    if isinstance(x, torch.Tensor):
        scale = torch.sin(t.float() / 100.0).reshape(-1, 1, 1, 1)
        return 0.3 * x + 0.1 * scale
    scale = keras.ops.reshape(keras.ops.sin(keras.ops.cast(t, "float32") / 100.0),
                              [-1, 1, 1, 1])
    return 0.3 * x + 0.1 * scale


@pytest.mark.parametrize("in_loop", [True, False], ids=["keyed_noise", "given_noise"])
@pytest.mark.parametrize("name,eta", [("ddim", 0.0), ("ddim", 0.7), ("ddpm", 0.0)])
def test_compiled_sampling_loop_equals_diffusers_loop(name, eta, in_loop):
    num_steps, batch, shape = 12, 3, (4, 4, 2)
    schedule = NoiseSchedule(1000, "linear")
    sampler = DiffusionSampler(schedule, name, eta=eta)
    timesteps, previous = sampler.timesteps(num_steps)
    if in_loop:
        # The loop draws step i's noise from the row keys; diffusers gets the same numbers.
        initial, keys = sampling_noise(5, batch, shape)
        step_noise = np.stack([keyed_normal_numpy(keys, i, shape) for i in range(num_steps)])
        noise_input = keys
    else:
        initial, step_noise = sampling_noise(5, batch, shape, num_steps)
        noise_input = step_noise

    traces = []

    def run(initial, noise_input):
        traces.append(1)
        if in_loop:
            return sampler.sample(_toy_denoiser, initial, None, timesteps, previous,
                                  noise_keys=noise_input)
        return sampler.sample(_toy_denoiser, initial, noise_input, timesteps, previous)

    function = compile_function(run, [])
    actual = keras.ops.convert_to_numpy(function(keras.ops.convert_to_tensor(initial),
                                                 keras.ops.convert_to_tensor(noise_input)))
    function(keras.ops.convert_to_tensor(initial), keras.ops.convert_to_tensor(noise_input))
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert len(traces) == 1  # one compiled program for the whole loop, reused

    reference = (DDIMScheduler if name == "ddim" else DDPMScheduler)()
    reference.set_timesteps(num_steps)
    x = torch.from_numpy(initial)
    for i, t in enumerate(reference.timesteps):
        output = _toy_denoiser(x, torch.full((batch,), int(t)))
        if name == "ddim":
            x = reference.step(output, int(t), x, eta=eta,
                               variance_noise=torch.from_numpy(step_noise[i])).prev_sample
        else:
            # diffusers draws its own noise: take its mean and add our noise.
            mean = _ddpm_mean(reference, output, int(t), x)
            if int(t) > 0:
                std = reference._get_variance(int(t)) ** 0.5
                mean = mean + std * torch.from_numpy(step_noise[i])
            x = mean
    np.testing.assert_allclose(actual, x.numpy(), atol=1e-4, rtol=1e-4)


def _ddpm_mean(reference, output, t, x):
    """diffusers' DDPM step without its noise: its posterior mean."""
    result = reference.step(output, t, x, generator=torch.Generator().manual_seed(0))
    if t == 0:
        return result.prev_sample
    drawn = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return result.prev_sample - reference._get_variance(t) ** 0.5 * drawn


def test_sampling_noise_rows_do_not_depend_on_batch():
    first, first_steps = sampling_noise(3, 2, (2, 2, 1), 4)
    more, more_steps = sampling_noise(3, 5, (2, 2, 1), 4)
    np.testing.assert_array_equal(first, more[:2])
    np.testing.assert_array_equal(first_steps, more_steps[:, :2])
    assert not np.allclose(first[0], first[1])
    # The default call: initial noise and one int32 key per row, also batch-independent.
    initial, keys = sampling_noise(3, 2, (2, 2, 1))
    more_initial, more_keys = sampling_noise(3, 5, (2, 2, 1))
    assert keys.dtype == np.int32 and keys.shape == (2,)
    np.testing.assert_array_equal(initial, first)
    np.testing.assert_array_equal(keys, more_keys[:2])
    assert keys[0] != keys[1]


def test_keyed_normal_equals_its_numpy_reference_and_is_normal():
    """The in-loop generator's integer hashing wraps like numpy's uint32 on this backend,
    so every backend draws the same noise; the draws are standard normal and differ by row
    and by step."""
    _, keys = sampling_noise(11, 4, (8, 8, 3))
    reference = keyed_normal_numpy(keys, 7, (8, 8, 3))
    compiled = compile_function(lambda k, i: keyed_normal(k, i, (8, 8, 3)), [])
    actual = keras.ops.convert_to_numpy(compiled(keras.ops.convert_to_tensor(keys),
                                                 keras.ops.convert_to_tensor(7, "int32")))
    np.testing.assert_allclose(actual, reference, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keyed_normal(keys, 7, (8, 8, 3))),
                               reference, atol=1e-5)
    draws = np.concatenate([keyed_normal_numpy(keys, i, (8, 8, 3)).ravel()
                            for i in range(50)])
    assert abs(draws.mean()) < 0.02 and abs(draws.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(draws) > 1.96) - 0.05) < 0.01  # normal tails, not uniform
    assert not np.allclose(reference[0], reference[1])
    assert not np.allclose(keyed_normal_numpy(keys, 8, (8, 8, 3)), reference)
    # A row's draws depend on its key only, not on the rest of the batch.
    np.testing.assert_array_equal(keyed_normal_numpy(keys[2:3], 7, (8, 8, 3))[0],
                                  reference[2])
