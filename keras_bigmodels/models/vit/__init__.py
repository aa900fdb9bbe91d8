"""Vision Transformer (Dosovitskiy et al. 2021): backbone, presets, HF import.

Classify images with `keras_bigmodels.models.ImageClassifier`.
"""

from keras_bigmodels.models.vit import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.vit.backbone import (
    ViTBackbone,
    ViTEmbedding,
    interpolate_position_embeddings,
)
