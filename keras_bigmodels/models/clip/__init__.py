"""CLIP (Radford et al. 2021): image and text towers, presets, contrastive task, HF import.

`CLIPTextEncoder` is usable alone (latent diffusion conditions on it); `CLIPVisionEncoder`
gives per-patch and pooled image features.
"""

from keras_bigmodels.models.clip import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.clip.backbone import (  # noqa: F401
    CLIPBackbone,
    CLIPLogits,
    CLIPTextEncoder,
    CLIPVisionEncoder,
    EndOfTextPooling,
    end_of_text_positions,
)
from keras_bigmodels.models.clip.tasks import CLIPContrastiveTask, pack_texts  # noqa: F401
