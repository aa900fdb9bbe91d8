"""Swin Transformer (Liu et al. 2021): backbone, presets, HF import.

Classify images with `keras_bigmodels.models.ImageClassifier`.
"""

from keras_bigmodels.models.swin import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.swin.backbone import SwinBackbone
