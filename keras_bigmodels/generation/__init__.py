"""Samplers and the compiled decode loop with a KV cache, shared by every generative family."""

from keras_bigmodels.backend import compile_function
from keras_bigmodels.generation.decode import beam_search, decode, repeat_batch
from keras_bigmodels.generation.samplers import SAMPLERS, Sampler
from keras_bigmodels.generation.diffusion import (DiffusionSampler, inference_timesteps,  # noqa: F401
                                                  sampling_noise)
