"""Diffusion samplers: DDPM ancestral and DDIM steps and the sampling loop, model-agnostic.

`DiffusionSampler` holds a `NoiseSchedule` and the sampler's options (diffusers' names and
defaults); `step()` equals one `DDPMScheduler.step` / `DDIMScheduler.step` of diffusers for
the same config, inputs and noise (tests/test_diffusion_schedulers.py), written in
`keras.ops`. `sample()` runs the whole reverse process as one `ops.fori_loop` over a
`denoise(sample, timesteps) -> model_output` callable, so `backend.compile_function` turns it
into one XLA program on JAX and TensorFlow (and runs it eagerly without gradients on torch).

The random numbers come in as arguments (`sampling_noise` draws them on the host, each row
from its own generator), so a row's image depends only on its seed, not on its batch, and
the same seed gives the same images on every backend.
"""

import numpy as np
from keras import ops

from keras_bigmodels.objectives.diffusion import NoiseSchedule
from keras_bigmodels.utils import check_finite_number, check_in, check_positive_int

DIFFUSION_SAMPLERS = ("ddim", "ddpm")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def inference_timesteps(num_train_timesteps, num_steps, spacing="leading", steps_offset=0):
    """The descending int timesteps of a `num_steps` sampling run, as diffusers'
    `set_timesteps` spaces them ("leading", "trailing" or "linspace").

    Example:
    >>> inference_timesteps(1000, 4)
    array([750, 500, 250,   0])
    >>> inference_timesteps(1000, 4, "trailing")
    array([999, 749, 499, 249])
    """
    check_positive_int("num_steps", num_steps)
    check_in("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    if num_steps > num_train_timesteps:
        raise ValueError(f"`num_steps` ({num_steps}) must be at most the number of training "
                         f"timesteps ({num_train_timesteps}).")
    if spacing == "linspace":
        steps = np.linspace(0, num_train_timesteps - 1, num_steps).round()[::-1]
    elif spacing == "leading":
        ratio = num_train_timesteps // num_steps
        steps = (np.arange(0, num_steps) * ratio).round()[::-1] + steps_offset
    else:
        ratio = num_train_timesteps / num_steps
        steps = np.round(np.arange(num_train_timesteps, 0, -ratio)) - 1
    return np.ascontiguousarray(steps).astype(np.int64)


def sampling_noise(seed, batch_size, sample_shape, num_noise_steps):
    """(initial noise [batch, *sample_shape], step noise [num_noise_steps, batch, ...]) float32.

    Row i draws from `np.random.default_rng([seed, i])` (or from its own seed when `seed` is
    a list), so its samples do not depend on the rest of the batch; None draws fresh noise.
    """
    if seed is None:
        generators = [np.random.default_rng() for _ in range(batch_size)]
    elif isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != batch_size:
            raise ValueError(f"`seed` as a list needs one seed per image ({batch_size}); "
                             f"received {len(seed)}.")
        generators = [np.random.default_rng(int(s)) for s in seed]
    else:
        generators = [np.random.default_rng([int(seed), i]) for i in range(batch_size)]
    shape = tuple(sample_shape)
    initial = np.stack([g.standard_normal(shape, dtype=np.float32) for g in generators])
    steps = np.stack([g.standard_normal((num_noise_steps,) + shape, dtype=np.float32)
                      for g in generators], axis=1)
    return initial, steps


class DiffusionSampler:
    """DDPM ancestral or DDIM sampling over a `NoiseSchedule`, with diffusers' options.

    Args:
        schedule: the `NoiseSchedule` the denoiser was trained with.
        sampler: "ddim" (Song et al. 2021; deterministic at eta=0) or "ddpm" (ancestral).
        eta: DDIM's noise scale (0: deterministic, 1: DDPM-like variance); "ddim" only.
        prediction_type: what the denoiser outputs: "epsilon", "v_prediction" or "sample".
        timestep_spacing: "leading" (diffusers' default), "trailing" or "linspace".
        steps_offset: added to "leading" timesteps (Stable Diffusion uses 1).
        clip_sample: clip the predicted x_0 to [-clip_sample_range, clip_sample_range].
        thresholding: dynamic thresholding (Imagen) of the predicted x_0 instead of clipping:
            each sample is clipped to its `dynamic_thresholding_ratio` quantile of |x_0|
            (at least 1, at most `sample_max_value`) and divided by it.
        set_alpha_to_one: DDIM's last step goes to abar = 1 (else abar_0).
        variance_type: DDPM's step variance, "fixed_small" (posterior) or "fixed_large"
            (beta_t).

    Example:
    >>> sampler = DiffusionSampler(NoiseSchedule(1000), "ddim")
    >>> timesteps, previous = sampler.timesteps(50)
    >>> images = sampler.sample(denoise, initial_noise, None, timesteps, previous)
    """

    def __init__(self, schedule, sampler="ddim", eta=0.0, prediction_type="epsilon",
                 timestep_spacing="leading", steps_offset=0, clip_sample=True,
                 clip_sample_range=1.0, thresholding=False, dynamic_thresholding_ratio=0.995,
                 sample_max_value=1.0, set_alpha_to_one=True, variance_type="fixed_small"):
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"`schedule` must be a NoiseSchedule; received {schedule!r}.")
        check_in("sampler", sampler, DIFFUSION_SAMPLERS)
        check_in("prediction_type", prediction_type, PREDICTION_TYPES)
        check_in("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        check_in("variance_type", variance_type, VARIANCE_TYPES)
        check_finite_number("eta", eta)
        if eta < 0:
            raise ValueError(f"`eta` must be >= 0; received {eta!r}.")
        if sampler == "ddpm" and eta != 0:
            raise ValueError("`eta` applies to sampler='ddim' only; DDPM's variance is fixed "
                             f"by `variance_type`. Received eta={eta!r}.")
        self.schedule = schedule
        self.sampler = sampler
        self.eta = float(eta)
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.steps_offset = int(steps_offset)
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.thresholding = bool(thresholding)
        self.dynamic_thresholding_ratio = float(dynamic_thresholding_ratio)
        self.sample_max_value = float(sample_max_value)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.variance_type = variance_type

    @property
    def needs_noise(self):
        """Whether steps add fresh noise (DDPM, or DDIM with eta > 0)."""
        return self.sampler == "ddpm" or self.eta > 0

    def timesteps(self, num_steps):
        """(timesteps, previous timesteps), int32 numpy [num_steps]: where each step starts
        and where it lands (-1: the clean sample), as diffusers computes them."""
        steps = inference_timesteps(self.schedule.num_train_timesteps, num_steps,
                                    self.timestep_spacing, self.steps_offset)
        if self.sampler == "ddim":
            # diffusers' DDIM lands a fixed stride below, whatever the spacing.
            previous = steps - self.schedule.num_train_timesteps // num_steps
        else:
            previous = np.concatenate([steps[1:], [-1]])
        return steps.astype(np.int32), previous.astype(np.int32)

    # One step ---------------------------------------------------------------------------
    def _threshold(self, x0):
        batch = ops.shape(x0)[0]
        flat = ops.reshape(x0, [batch, -1])
        s = ops.quantile(ops.abs(flat), self.dynamic_thresholding_ratio, axis=1)
        s = ops.clip(s, 1.0, self.sample_max_value)[:, None]
        return ops.reshape(ops.clip(flat, -s, s) / s, ops.shape(x0))

    def _limit(self, x0):
        if self.thresholding:
            return self._threshold(x0)
        if self.clip_sample:
            return ops.clip(x0, -self.clip_sample_range, self.clip_sample_range)
        return x0

    def step(self, model_output, timestep, previous_timestep, sample, noise=None):
        """One reverse step from `timestep` to `previous_timestep` (< 0: the clean sample).

        Args:
            model_output: the denoiser's output for `sample` at `timestep`.
            timestep, previous_timestep: int scalars (Python or tensors).
            sample: x_t, [batch, ...].
            noise: standard normal noise shaped like `sample`, used when `needs_noise`.

        Returns:
            (x_previous, predicted x_0), float32.
        """
        sample = ops.cast(sample, "float32")
        model_output = ops.cast(model_output, "float32")
        alphas_cumprod = ops.convert_to_tensor(self.schedule.alphas_cumprod, "float32")
        timestep = ops.cast(timestep, "int32")
        previous_timestep = ops.cast(previous_timestep, "int32")
        abar_t = ops.take(alphas_cumprod, timestep)
        if self.sampler == "ddim" and not self.set_alpha_to_one:
            final = alphas_cumprod[0]
        else:
            final = ops.ones((), "float32")
        abar_prev = ops.where(ops.greater_equal(previous_timestep, 0),
                              ops.take(alphas_cumprod, ops.maximum(previous_timestep, 0)), final)
        beta_t = 1.0 - abar_t

        if self.prediction_type == "epsilon":
            x0 = (sample - ops.sqrt(beta_t) * model_output) / ops.sqrt(abar_t)
            epsilon = model_output
        elif self.prediction_type == "v_prediction":
            x0 = ops.sqrt(abar_t) * sample - ops.sqrt(beta_t) * model_output
            epsilon = ops.sqrt(abar_t) * model_output + ops.sqrt(beta_t) * sample
        else:
            x0 = model_output
            epsilon = (sample - ops.sqrt(abar_t) * x0) / ops.sqrt(beta_t)
        x0 = self._limit(x0)

        if self.sampler == "ddim":
            variance = (1.0 - abar_prev) / beta_t * (1.0 - abar_t / abar_prev)
            std = self.eta * ops.sqrt(variance)
            # max(., 0): float error must not turn the square root into NaN at eta = 1.
            direction = ops.sqrt(ops.maximum(1.0 - abar_prev - std ** 2, 0.0)) * epsilon
            previous = ops.sqrt(abar_prev) * x0 + direction
            if self.eta > 0:
                previous = previous + std * ops.cast(noise, "float32")
            return previous, x0

        alpha_t = abar_t / abar_prev
        step_beta = 1.0 - alpha_t
        mean = (ops.sqrt(abar_prev) * step_beta / beta_t) * x0 + (
            ops.sqrt(alpha_t) * (1.0 - abar_prev) / beta_t) * sample
        if self.variance_type == "fixed_small":
            variance = ops.maximum((1.0 - abar_prev) / beta_t * step_beta, 1e-20)
        else:
            variance = step_beta
        if noise is None:
            return mean, x0
        # No noise on the last step (t = 0), as diffusers.
        std = ops.where(ops.greater(timestep, 0), ops.sqrt(variance), 0.0)
        return mean + std * ops.cast(noise, "float32"), x0

    # The loop --------------------------------------------------------------------------
    def sample(self, denoise, initial_noise, step_noise, timesteps, previous_timesteps):
        """The reverse process from `initial_noise`: one `ops.fori_loop` of `step`s.

        Args:
            denoise: `denoise(sample, timesteps [batch] int32) -> model_output`.
            initial_noise: x_T, [batch, ...] (scaled by init_noise_sigma = 1).
            step_noise: [num_steps, batch, ...] noise per step, or None when not
                `needs_noise`.
            timesteps, previous_timesteps: from `self.timesteps(num_steps)`.

        Returns:
            x_0 [batch, ...], float32 (not clipped to the data range).
        """
        if self.needs_noise and step_noise is None:
            raise ValueError("`step_noise` is required: this sampler adds noise each step.")
        timesteps = ops.convert_to_tensor(timesteps, "int32")
        previous_timesteps = ops.convert_to_tensor(previous_timesteps, "int32")
        num_steps = int(timesteps.shape[0])
        batch = ops.shape(initial_noise)[0]

        def body(i, x):
            t = ops.take(timesteps, i)
            output = denoise(x, ops.full((batch,), t, dtype="int32"))
            noise = ops.take(step_noise, i, axis=0) if self.needs_noise else None
            x, _ = self.step(output, t, ops.take(previous_timesteps, i), x, noise)
            return x

        return ops.fori_loop(0, num_steps, body, ops.cast(initial_noise, "float32"))

    def get_config(self):
        return {"sampler": self.sampler, "eta": self.eta,
                "prediction_type": self.prediction_type,
                "timestep_spacing": self.timestep_spacing, "steps_offset": self.steps_offset,
                "clip_sample": self.clip_sample, "clip_sample_range": self.clip_sample_range,
                "thresholding": self.thresholding,
                "dynamic_thresholding_ratio": self.dynamic_thresholding_ratio,
                "sample_max_value": self.sample_max_value,
                "set_alpha_to_one": self.set_alpha_to_one,
                "variance_type": self.variance_type}
