"""BART (Lewis et al. 2020): a denoising sequence-to-sequence Transformer."""

from keras_bigmodels.models.bart import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.bart.backbone import (BartBackbone, BartEmbedding,  # noqa: F401
                                                  FinalLogitsBias)
from keras_bigmodels.models.bart.tasks import BartSeq2SeqLM  # noqa: F401
