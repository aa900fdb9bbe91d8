"""Vision Transformer (Dosovitskiy et al. 2021): backbone, classifier, presets, HF import."""

from keras_bigmodels.models.vit import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.vit.backbone import (
    ViTBackbone,
    ViTEmbedding,
    interpolate_position_embeddings,
)
from keras_bigmodels.models.vit.tasks import ViTImageClassifier
