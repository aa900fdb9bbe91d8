"""Swin Transformer (Liu et al. 2021): backbone, classifier, presets, HF import."""

from keras_bigmodels.models.swin import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.swin.backbone import SwinBackbone
from keras_bigmodels.models.swin.tasks import SwinImageClassifier
