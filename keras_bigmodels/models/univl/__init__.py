"""UniVL: text, video and cross encoders with a caption decoder, and its five objectives."""

from keras_bigmodels.models.univl import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.univl.backbone import SequenceEmbedding, UniVLBackbone
from keras_bigmodels.models.univl.tasks import OBJECTIVES, UniVLPretrainer
