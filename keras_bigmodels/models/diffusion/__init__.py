"""Diffusion: denoising UNets, the KL autoencoder, presets and diffusers weight mapping.

Images are channels_last [batch, height, width, channels] everywhere. Denoisers are called
as `unet([noisy_images, timesteps])`, `unet([noisy_images, timesteps, class_labels])` or
`unet([noisy_latents, timesteps, encoder_hidden_states])` (see `unet.py`).
"""

from keras_bigmodels.models.diffusion import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.diffusion.autoencoder import (  # noqa: F401
    AutoencoderKL,
    LatentDistribution,
)
from keras_bigmodels.models.diffusion.unet import UNet2D, UNet2DCondition  # noqa: F401
from keras_bigmodels.models.diffusion.dit import DiT, DiTBlock  # noqa: F401
from keras_bigmodels.models.diffusion.tasks import (  # noqa: F401
    DiffusionModel,
    ImageEmbeddingDecoder,
    LatentTextToImage,
    prompt_token_ids,
)
from keras_bigmodels.models.diffusion.prior import (  # noqa: F401
    DiffusionPrior,
    PriorTransformer,
    UnCLIPPipeline,
)
