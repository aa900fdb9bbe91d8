"""Diffusion noise schedules and the forward process q(x_t | x_0), with training targets.

A `NoiseSchedule` is a small pure object: its `betas`, `alphas` and `alphas_cumprod` are
numpy float32 arrays equal to diffusers' `DDPMScheduler` / `DDIMScheduler` ones for the same
config (tested), and its tensor methods (`add_noise`, `velocity`, `target`) are written in
`keras.ops`, so they run inside a compiled `train_step` on every backend.

The forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, where
abar_t = prod_{s <= t} (1 - beta_s). The denoiser predicts eps ("epsilon", DDPM) or
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 ("v_prediction", Salimans & Ho 2022).
"""

import math

import numpy as np
from keras import ops

from keras_bigmodels.utils import check_in, check_positive_int

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def cosine_betas(num_train_timesteps, max_beta=0.999):
    """Betas of the cosine schedule (Nichol & Dhariwal 2021), as diffusers'
    `betas_for_alpha_bar`: abar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2, each beta capped
    at `max_beta` so the last steps do not divide by zero."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps),
                 max_beta) for i in range(num_train_timesteps)]
    return np.asarray(betas, dtype=np.float32)


class NoiseSchedule:
    """A discrete DDPM noise schedule: betas, alphas and their cumulative products.

    Args:
        num_train_timesteps: the number of diffusion steps T the denoiser is trained on.
        beta_schedule: "linear" (DDPM), "scaled_linear" (Stable Diffusion: linear in
            sqrt(beta)), "squaredcos_cap_v2" or its alias "cosine" (improved DDPM).
        beta_start, beta_end: the first and last beta of the linear schedules.

    Example:
    >>> schedule = NoiseSchedule(1000, "linear")
    >>> schedule.alphas_cumprod.shape
    (1000,)
    >>> noisy = schedule.add_noise(images, noise, timesteps)  # keras.ops, any backend
    """

    def __init__(self, num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001,
                 beta_end=0.02):
        check_positive_int("num_train_timesteps", num_train_timesteps)
        check_in("beta_schedule", beta_schedule, BETA_SCHEDULES)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError("`beta_start` and `beta_end` must satisfy 0 < beta_start <= "
                             f"beta_end < 1; received {beta_start!r} and {beta_end!r}.")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
        elif beta_schedule == "scaled_linear":
            betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps,
                                dtype=np.float32) ** 2
        else:
            betas = cosine_betas(num_train_timesteps)
        self.betas = betas.astype(np.float32)
        self.alphas = (1.0 - self.betas).astype(np.float32)
        # A float32 running product, as torch.cumprod computes it in diffusers.
        self.alphas_cumprod = np.cumprod(self.alphas, dtype=np.float32)

    def get_config(self):
        return {"num_train_timesteps": self.num_train_timesteps,
                "beta_schedule": self.beta_schedule, "beta_start": self.beta_start,
                "beta_end": self.beta_end}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"NoiseSchedule({args})"

    # Tensor side (keras.ops) -----------------------------------------------------------
    def _coefficients(self, timesteps, rank, dtype):
        """sqrt(abar_t) and sqrt(1 - abar_t) per row, shaped to broadcast over a sample of
        rank `rank`."""
        alphas_cumprod = ops.convert_to_tensor(self.alphas_cumprod, dtype="float32")
        abar = ops.take(alphas_cumprod, ops.cast(timesteps, "int32"), axis=0)
        abar = ops.reshape(abar, [-1] + [1] * (rank - 1))
        return ops.cast(ops.sqrt(abar), dtype), ops.cast(ops.sqrt(1.0 - abar), dtype)

    def add_noise(self, original_samples, noise, timesteps):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (diffusers' `add_noise`).

        Args:
            original_samples: x_0, [batch, ...].
            noise: standard normal noise of the same shape.
            timesteps: int [batch] in [0, num_train_timesteps).
        """
        signal, sigma = self._coefficients(timesteps, len(original_samples.shape),
                                           original_samples.dtype)
        return signal * original_samples + sigma * noise

    def velocity(self, original_samples, noise, timesteps):
        """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 (diffusers' `get_velocity`)."""
        signal, sigma = self._coefficients(timesteps, len(original_samples.shape),
                                           original_samples.dtype)
        return signal * noise - sigma * original_samples

    def target(self, prediction_type, original_samples, noise, timesteps):
        """What a denoiser of `prediction_type` ("epsilon" or "v_prediction") regresses."""
        check_in("prediction_type", prediction_type, PREDICTION_TYPES)
        if prediction_type == "epsilon":
            return noise
        return self.velocity(original_samples, noise, timesteps)
