"""T5 family: T5 v1.0, T5 v1.1, Flan-T5 and mT5 (encoder-decoder and encoder-only)."""

from keras_bigmodels.models.t5 import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.t5.backbone import (  # noqa: F401
    SequenceRelativePositionBias,
    T5Backbone,
)
from keras_bigmodels.models.t5.tasks import T5Seq2SeqLM  # noqa: F401
