"""Diffusion samplers: DDPM ancestral and DDIM steps and the sampling loop, model-agnostic.

`DiffusionSampler` holds a `NoiseSchedule` and the sampler's options (diffusers' names and
defaults); `step()` equals one `DDPMScheduler.step` / `DDIMScheduler.step` of diffusers for
the same config, inputs and noise (tests/test_diffusion_schedulers.py), written in
`keras.ops`. `sample()` runs the whole reverse process as one `ops.fori_loop` over a
`denoise(sample, timesteps) -> model_output` callable, so `backend.compile_function` turns it
into one XLA program on JAX and TensorFlow (and runs it eagerly without gradients on torch).

The initial noise comes in as an argument (`sampling_noise` draws it on the host, each row
from its own generator) together with one int32 key per row; the noise of each stochastic
step (DDPM, DDIM with eta > 0) is drawn inside the loop from those keys by `keyed_normal`,
a counter-based generator written in `keras.ops` integer arithmetic. So sampling holds one
step's noise at a time, not [num_steps, batch, ...] of it; a row's image depends only on
its seed, not on its batch; and the same seed gives the same images on every backend.
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


def _row_generators(seed, batch_size):
    if seed is None:
        generators = [np.random.default_rng() for _ in range(batch_size)]
    elif isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != batch_size:
            raise ValueError(f"`seed` as a list needs one seed per image ({batch_size}); "
                             f"received {len(seed)}.")
        generators = [np.random.default_rng(int(s)) for s in seed]
    else:
        generators = [np.random.default_rng([int(seed), i]) for i in range(batch_size)]
    return generators


def sampling_noise(seed, batch_size, sample_shape, num_noise_steps=None):
    """The random inputs of a sampling run, drawn on the host per row.

    Row i draws from `np.random.default_rng([seed, i])` (or from its own seed when `seed` is
    a list), so its samples do not depend on the rest of the batch; None draws fresh noise.

    Args:
        seed: an int, one int per row, or None.
        batch_size: rows.
        sample_shape: the shape of one sample.
        num_noise_steps: None (the default): return the rows' noise keys for the loop to
            draw each step's noise from (`keyed_normal`); an int: materialize that many
            steps of noise on the host instead (the older call, kept for callers that feed
            `step_noise` themselves; it costs num_noise_steps x batch x sample floats).

    Returns:
        (initial noise [batch, *sample_shape] float32, noise keys [batch] int32) or, with
        `num_noise_steps`, (initial noise, step noise [num_noise_steps, batch, ...] float32).

    Example:
    >>> initial, keys = sampling_noise(0, 2, (8, 8, 1))
    >>> initial.shape, keys.shape
    ((2, 8, 8, 1), (2,))
    """
    generators = _row_generators(seed, batch_size)
    shape = tuple(sample_shape)
    initial = np.stack([g.standard_normal(shape, dtype=np.float32) for g in generators])
    if num_noise_steps is None:
        keys = np.array([g.integers(0, 2 ** 32, dtype=np.uint64) for g in generators],
                        np.uint64).astype(np.uint32).view(np.int32)
        return initial, keys
    steps = np.stack([g.standard_normal((num_noise_steps,) + shape, dtype=np.float32)
                      for g in generators], axis=1)
    return initial, steps


# A counter-based normal generator in keras.ops --------------------------------------------
# Chris Wellons' "lowbias32" integer hash, on int32 bit patterns. Multiplication wraps
# modulo 2**32 on every backend (XLA defines it; TensorFlow's and torch's CPU kernels wrap),
# and right shifts are made logical by masking off the sign bits the arithmetic shift
# copies in, so the bits equal numpy's uint32 arithmetic (`keyed_normal_numpy`, tested).
_HASH_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
_STEP_SALT = 0x9E3779B9  # keeps step 0's hash away from the element hashes


def _as_int32(value):
    return int(np.array(value & 0xFFFFFFFF, np.uint32).view(np.int32))


def _shift_right_logical(x, bits):
    mask = ops.convert_to_tensor((1 << (32 - bits)) - 1, "int32")
    return ops.bitwise_and(ops.right_shift(x, ops.convert_to_tensor(bits, "int32")), mask)


def _hash32(x):
    x = ops.bitwise_xor(x, _shift_right_logical(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(_as_int32(_HASH_MULTIPLIERS[0]), "int32"))
    x = ops.bitwise_xor(x, _shift_right_logical(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(_as_int32(_HASH_MULTIPLIERS[1]), "int32"))
    return ops.bitwise_xor(x, _shift_right_logical(x, 16))


def _hash32_numpy(x):
    x = np.asarray(x).astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(_HASH_MULTIPLIERS[0])
        x ^= x >> np.uint32(15)
        x *= np.uint32(_HASH_MULTIPLIERS[1])
        x ^= x >> np.uint32(16)
    return x


def _box_muller(bits_a, bits_b, xp_log, xp_sqrt, xp_cos):
    # 24 high bits -> uniforms; u1 in (0, 1] so that log(u1) is finite.
    scale = 1.0 / (1 << 24)
    u1 = (bits_a + 1.0) * scale
    u2 = bits_b * scale
    return xp_sqrt(-2.0 * xp_log(u1)) * xp_cos((2.0 * np.pi) * u2)


def keyed_normal(keys, step, sample_shape):
    """Standard normal noise [batch, *sample_shape] float32 for one step, from row keys.

    A counter-based generator (hash of key, step and element index, then Box-Muller) in
    `keras.ops`, so a compiled sampling loop draws each step's noise when it needs it; the
    same keys and step give the same noise on every backend (`keyed_normal_numpy`).

    Args:
        keys: int32 [batch], one per row (from `sampling_noise`).
        step: the step index, an int or an int32 scalar tensor.
        sample_shape: the shape of one sample (static).

    Example:
    >>> _, keys = sampling_noise(0, 2, (4, 4, 1))
    >>> keyed_normal(keys, 3, (4, 4, 1)).shape
    (2, 4, 4, 1)
    """
    size = int(np.prod(sample_shape))
    keys = ops.cast(keys, "int32")
    step = ops.cast(step, "int32")
    step_hash = _hash32(ops.bitwise_xor(step, ops.convert_to_tensor(
        _as_int32(_STEP_SALT), "int32")))
    row = _hash32(ops.bitwise_xor(keys, step_hash))[:, None]
    # Two words per element: the even one gives u1, the odd one u2.
    counters = ops.arange(2 * size, dtype="int32")
    bits = _shift_right_logical(_hash32(ops.bitwise_xor(row, _hash32(counters)[None])), 8)
    bits = ops.reshape(ops.cast(bits, "float32"), (-1, size, 2))
    noise = _box_muller(bits[..., 0], bits[..., 1], ops.log, ops.sqrt, ops.cos)
    return ops.reshape(noise, (-1,) + tuple(sample_shape))


def keyed_normal_numpy(keys, step, sample_shape):
    """`keyed_normal` in numpy (uint32 arithmetic): the reference its bits are tested on.

    Example:
    >>> keyed_normal_numpy(np.array([1, 2], "int32"), 0, (3,)).shape
    (2, 3)
    """
    size = int(np.prod(sample_shape))
    keys = np.asarray(keys).astype(np.int32).view(np.uint32)
    step_hash = _hash32_numpy(np.uint32(step & 0xFFFFFFFF) ^ np.uint32(_STEP_SALT))
    row = _hash32_numpy(keys ^ step_hash)[:, None]
    counters = _hash32_numpy(np.arange(2 * size, dtype=np.uint32))[None]
    bits = (_hash32_numpy(row ^ counters) >> np.uint32(8)).astype(np.float32)
    bits = bits.reshape(-1, size, 2)
    noise = _box_muller(bits[..., 0], bits[..., 1], np.log, np.sqrt, np.cos)
    return noise.astype(np.float32).reshape((-1,) + tuple(sample_shape))


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
    >>> initial_noise, noise_keys = sampling_noise(0, 4, (32, 32, 3))
    >>> images = sampler.sample(denoise, initial_noise, None, timesteps, previous, noise_keys)
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
    def sample(self, denoise, initial_noise, step_noise, timesteps, previous_timesteps,
               noise_keys=None):
        """The reverse process from `initial_noise`: one `ops.fori_loop` of `step`s.

        Args:
            denoise: `denoise(sample, timesteps [batch] int32) -> model_output`.
            initial_noise: x_T, [batch, ...] (scaled by init_noise_sigma = 1).
            step_noise: [num_steps, batch, ...] noise per step, or None: with `noise_keys`
                each step draws its own noise inside the loop (`keyed_normal`), and
                without them the sampler must not need noise.
            timesteps, previous_timesteps: from `self.timesteps(num_steps)`.
            noise_keys: int32 [batch] row keys (from `sampling_noise`) for in-loop noise.

        Returns:
            x_0 [batch, ...], float32 (not clipped to the data range).
        """
        if self.needs_noise and step_noise is None and noise_keys is None:
            raise ValueError("`noise_keys` (or `step_noise`) is required: this sampler adds "
                             "noise each step.")
        timesteps = ops.convert_to_tensor(timesteps, "int32")
        previous_timesteps = ops.convert_to_tensor(previous_timesteps, "int32")
        num_steps = int(timesteps.shape[0])
        batch = ops.shape(initial_noise)[0]
        sample_shape = tuple(initial_noise.shape[1:])

        def noise_of(i):
            if not self.needs_noise:
                return None
            if step_noise is not None:
                return ops.take(step_noise, i, axis=0)
            # Drawn here, per step: the loop never holds more than one step's noise.
            return keyed_normal(noise_keys, i, sample_shape)

        def body(i, x):
            t = ops.take(timesteps, i)
            output = denoise(x, ops.full((batch,), t, dtype="int32"))
            x, _ = self.step(output, t, ops.take(previous_timesteps, i), x, noise_of(i))
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


def check_sampling_arguments(schedule, sampler, num_steps, guidance_scale):
    """ValueError naming the argument unless `sampler` is one of DIFFUSION_SAMPLERS,
    `num_steps` an int in [1, num_train_timesteps] and `guidance_scale` a number >= 0.

    Example:
    >>> check_sampling_arguments(NoiseSchedule(100), "ddim", 10, 3.0)
    """
    check_in("sampler", sampler, DIFFUSION_SAMPLERS)
    if (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
            or not 1 <= num_steps <= schedule.num_train_timesteps):
        raise ValueError(f"`num_steps` must be an int in [1, {schedule.num_train_timesteps}] "
                         f"(num_train_timesteps); received {num_steps!r}.")
    check_finite_number("guidance_scale", guidance_scale)
    if guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be >= 0; received {guidance_scale!r}.")


def classifier_free_guidance(denoise, sample, timesteps, conditions, null_conditions,
                             guidance_scale):
    """uncond + s * (cond - uncond) (Ho & Salimans 2022) from one batched denoiser pass.

    The conditioned rows and the null-condition rows run as one batch of twice the size
    (one network call per step instead of two).

    Args:
        denoise: `denoise(sample, timesteps, conditions) -> model_output`.
        sample, timesteps: [batch, ...] and [batch].
        conditions, null_conditions: tuples of tensors [batch, ...], matching.
        guidance_scale: s (a float or scalar tensor).

    Example:
    >>> output = classifier_free_guidance(denoise, x, t, (labels,), (null_labels,), 3.0)
    """
    both = denoise(ops.concatenate([sample, sample], axis=0),
                   ops.concatenate([timesteps, timesteps], axis=0),
                   tuple(ops.concatenate([c, n], axis=0)
                         for c, n in zip(conditions, null_conditions)))
    conditioned, unconditioned = ops.split(ops.cast(both, "float32"), 2, axis=0)
    return unconditioned + guidance_scale * (conditioned - unconditioned)
