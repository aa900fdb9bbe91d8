"""Diffusion: denoising UNets, the KL autoencoder, presets and diffusers weight mapping.

Images are channels_last [batch, height, width, channels] everywhere.
"""

from keras_bigmodels.models.diffusion.unet import UNet2D, UNet2DCondition  # noqa: F401
