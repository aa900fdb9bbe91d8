"""The KL autoencoder of latent diffusion (Stable Diffusion's VAE), channels_last.

diffusers' `AutoencoderKL`: an encoder of resolution levels (residual blocks, strided
convs, a self-attention middle block) to the mean and log-variance of a diagonal Gaussian
over latents, and a mirrored decoder. Latent diffusion trains the denoiser on latents
scaled by `scaling_factor` (0.18215 for SD v1) so that they have about unit variance;
`encode_latents` / `decode_latents` apply it.
"""

import keras
from keras import ops

from keras_bigmodels.layers.unet import (
    ImageConv2D,
    ImageGroupNormalization,
    UNetMidBlock,
    check_level_channels,
    down_blocks,
    up_blocks,
)
from keras_bigmodels.models.base import BackboneMethods
from keras_bigmodels.models.diffusion.unet import check_image
from keras_bigmodels.utils import check_positive_int

# diffusers' DiagonalGaussianDistribution clamps the log-variance to this range.
LOGVAR_RANGE = (-30.0, 20.0)


class LatentDistribution:
    """A diagonal Gaussian over latents [batch, height, width, latent_channels].

    Attributes: `mean`, `logvar` (clamped to [-30, 20] as diffusers), `std`.

    Example:
    >>> distribution = vae.encode(images)
    >>> latents = distribution.sample(seed=0)      # or distribution.mode()
    """

    def __init__(self, mean, logvar):
        self.mean = mean
        self.logvar = ops.clip(logvar, *LOGVAR_RANGE)
        self.std = ops.exp(0.5 * self.logvar)

    def sample(self, seed=None):
        """mean + std * N(0, 1), with a seed (int or `keras.random.SeedGenerator`)."""
        noise = keras.random.normal(ops.shape(self.mean), dtype=self.mean.dtype, seed=seed)
        return self.mean + self.std * noise

    def mode(self):
        return self.mean

    def kl(self):
        """KL divergence to N(0, 1), summed over the latent axes: [batch]."""
        return 0.5 * ops.sum(ops.square(self.mean) + ops.exp(self.logvar) - 1.0 - self.logvar,
                             axis=(1, 2, 3))


class _Coder(keras.layers.Layer):
    """The encoder or decoder stack (conv in, levels, middle block, norm, SiLU, conv out)."""

    def __init__(self, decoder, block_out_channels, layers_per_block, out_channels,
                 norm_num_groups, mid_block_attention, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.decoder = decoder
        common = dict(groups=norm_num_groups, epsilon=1e-6, use_time_embedding=False)
        first = block_out_channels[-1] if decoder else block_out_channels[0]
        self.input_conv = ImageConv2D(first, 3, padding="same", name="input_conv",
                                      dtype=dtype)
        # diffusers' autoencoder attention has one head over all channels.
        self.mid_block = UNetMidBlock(block_out_channels[-1],
                                      attention="self" if mid_block_attention else None,
                                      num_heads=1, name="mid_block", dtype=dtype, **common)
        # The UNets' levels without attention or time embedding (and, decoding, without
        # skips: `up_blocks` called with skips=None).
        if decoder:
            self.blocks = up_blocks(block_out_channels, layers_per_block + 1, dtype=dtype,
                                    **common)
        else:
            self.blocks = down_blocks(block_out_channels, layers_per_block,
                                      downsample_padding=0, dtype=dtype, **common)
        self.output_norm = ImageGroupNormalization(norm_num_groups, epsilon=1e-6,
                                                   name="output_norm", dtype=dtype)
        self.output_conv = ImageConv2D(out_channels, 3, padding="same",
                                       name="output_conv", dtype=dtype)

    def build(self, input_shape):
        self.input_conv.build(input_shape)
        shape = self.input_conv.compute_output_shape(input_shape)
        if self.decoder:
            self.mid_block.build(shape)
            for block in self.blocks:
                block.build(shape)
                shape = block.compute_output_shape(shape)
        else:
            for block in self.blocks:
                block.build(shape)
                shape, _ = block.compute_output_shape(shape)
            self.mid_block.build(shape)
        self.output_norm.build(shape)
        self.output_conv.build(shape)

    def compute_output_shape(self, input_shape):
        factor = 2 ** (len(self.blocks) - 1)
        scale = (lambda n: None if n is None else n * factor) if self.decoder else (
            lambda n: None if n is None else n // factor)
        return (input_shape[0], scale(input_shape[1]), scale(input_shape[2]),
                self.output_conv.filters)

    def call(self, inputs, training=None):
        hidden = self.input_conv(inputs)
        if self.decoder:
            hidden = self.mid_block(hidden, training=training)
            for block in self.blocks:
                hidden = block(hidden, training=training)
        else:
            for block in self.blocks:
                hidden, _ = block(hidden, training=training)
            hidden = self.mid_block(hidden, training=training)
        return self.output_conv(ops.silu(self.output_norm(hidden)))


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class AutoencoderKL(BackboneMethods, keras.Model):
    """Stable Diffusion's KL autoencoder (diffusers' `AutoencoderKL`), channels_last.

    `encode(images)` gives a `LatentDistribution` (mean, logvar) over latents
    [batch, height / f, width / f, latent_channels] with f = 2 ** (levels - 1);
    `decode(latents)` gives images back. `encode_latents` / `decode_latents` add SD's
    scaling (`(latents - shift_factor) * scaling_factor`), which the latent denoiser sees.
    Calling the model reconstructs: `vae(images)` decodes the mode of the posterior.

    Args:
        in_channels, out_channels: image channels.
        block_out_channels: channels of each level.
        layers_per_block: residual blocks per encoder level (decoder: one more).
        latent_channels: channels of the latents.
        norm_num_groups: group-norm groups (epsilon 1e-6, as diffusers').
        scaling_factor: latent scale (0.18215 for SD v1).
        shift_factor: latent shift subtracted before scaling (None: 0).
        use_quant_conv, use_post_quant_conv: the 1x1 convs around the latents.
        mid_block_attention: self-attention in the middle blocks.

    Example:
    >>> vae = AutoencoderKL(block_out_channels=(32, 64), norm_num_groups=8)
    >>> images = keras.random.uniform((1, 16, 16, 3), minval=-1, maxval=1)
    >>> latents = vae.encode_latents(images, seed=0)           # (1, 8, 8, 4), scaled
    >>> vae.decode_latents(latents).shape
    (1, 16, 16, 3)
    """

    # The backbones' preset and config methods, without being a (Subclassed)Backbone: the
    # sharding tests expect every backbone to split attention heads and a feed-forward
    # Megatron-style, and this convolutional autoencoder has one single-head attention and
    # no feed-forward (its weights are sharded by the rule table's fallback all the same).
    family = "autoencoder_kl"
    config_keys = ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                   "latent_channels", "norm_num_groups", "scaling_factor", "shift_factor",
                   "use_quant_conv", "use_post_quant_conv", "mid_block_attention")

    @classmethod
    def from_diffusers(cls, path, dtype=None, **overrides):
        """The model with the weights of a local diffusers directory (`save_pretrained`).

        Reads config.json and diffusion_pytorch_model.safetensors; nothing is downloaded
        and no torch is needed. Options of the config that this model does not build are
        refused by name.

        Args:
            path: the directory (e.g. a pipeline's `unet/` or `vae/` folder).
            dtype: the dtype policy (e.g. "bfloat16").
            **overrides: constructor kwargs to change (e.g. `dropout`).

        Example:
        >>> vae = AutoencoderKL.from_diffusers("stable-diffusion-v1-5/vae")
        """
        from keras_bigmodels.models.diffusion.huggingface import load_diffusers

        return load_diffusers(cls, path, dtype=dtype, **overrides)

    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, latent_channels=4, norm_num_groups=32,
                 scaling_factor=0.18215, shift_factor=None, use_quant_conv=True,
                 use_post_quant_conv=True, mid_block_attention=True, name="autoencoder_kl",
                 dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        block_out_channels = tuple(int(c) for c in block_out_channels)
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("layers_per_block", layers_per_block),
                           ("latent_channels", latent_channels)):
            check_positive_int(key, value)
        check_level_channels(block_out_channels, norm_num_groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.block_out_channels = block_out_channels
        self.layers_per_block = layers_per_block
        self.latent_channels = latent_channels
        self.norm_num_groups = norm_num_groups
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor
        self.use_quant_conv = use_quant_conv
        self.use_post_quant_conv = use_post_quant_conv
        self.mid_block_attention = mid_block_attention
        self.downsampling_factor = 2 ** (len(block_out_channels) - 1)

        dtype = self.dtype_policy
        common = dict(block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                      norm_num_groups=norm_num_groups, mid_block_attention=mid_block_attention,
                      dtype=dtype)
        self.encoder = _Coder(False, out_channels=2 * latent_channels, name="encoder", **common)
        self.decoder = _Coder(True, out_channels=out_channels, name="decoder", **common)
        # Keras' Conv2D: these sort after the model's `layers` attribute, so a .keras file
        # stores them under class-named paths (see UNet2D's output_conv).
        self.quant_conv = (keras.layers.Conv2D(2 * latent_channels, 1, name="quant_conv",
                                               dtype=dtype) if use_quant_conv else None)
        self.post_quant_conv = (keras.layers.Conv2D(latent_channels, 1, name="post_quant_conv",
                                                    dtype=dtype) if use_post_quant_conv else None)
        size = 2 * self.downsampling_factor
        # A symbolic pass builds every sublayer without computing anything.
        self.call(keras.KerasTensor((1, size, size, in_channels)))
        self.built = True

    def encode(self, images, training=None):
        """The posterior over latents of images [batch, height, width, in_channels] in [-1, 1].

        Returns a `LatentDistribution` (mean, logvar: [batch, height / f, width / f,
        latent_channels]), unscaled.
        """
        check_image(images, self.in_channels, self.downsampling_factor, "images")
        moments = self.encoder(images, training=training)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = ops.split(moments, 2, axis=-1)
        return LatentDistribution(mean, logvar)

    def decode(self, latents, training=None):
        """Images [batch, height * f, width * f, out_channels] from unscaled latents."""
        shape = tuple(latents.shape)
        if len(shape) != 4 or shape[-1] not in (None, self.latent_channels):
            raise ValueError(f"`latents` must be [batch, height, width, latent_channels="
                             f"{self.latent_channels}] (channels_last); received shape {shape}.")
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents, training=training)

    def encode_latents(self, images, seed=None, sample=True):
        """Scaled latents for a latent denoiser: (z - shift_factor) * scaling_factor.

        Args:
            images: [batch, height, width, in_channels] in [-1, 1].
            seed: the sampling seed (int or `keras.random.SeedGenerator`).
            sample: draw from the posterior (as SD's training); False takes its mean.
        """
        distribution = self.encode(images)
        latents = distribution.sample(seed) if sample else distribution.mode()
        return (latents - (self.shift_factor or 0.0)) * self.scaling_factor

    def decode_latents(self, latents):
        """Images from scaled latents (the inverse of `encode_latents`' scaling)."""
        return self.decode(latents / self.scaling_factor + (self.shift_factor or 0.0))

    def call(self, images, training=None, sample_posterior=False, seed=None):
        distribution = self.encode(images, training=training)
        latents = distribution.sample(seed) if sample_posterior else distribution.mode()
        return self.decode(latents, training=training)

    def compute_output_spec(self, images, training=None, sample_posterior=False, seed=None):
        return keras.KerasTensor(tuple(images.shape[:-1]) + (self.out_channels,),
                                 dtype=self.compute_dtype)
