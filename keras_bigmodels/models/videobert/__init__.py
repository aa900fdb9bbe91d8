"""VideoBERT: visual words (hierarchical k-means), a BERT over text and video, zero-shot."""

from keras_bigmodels.models.videobert.backbone import VideoBERTBackbone
# Importing the config registers the presets.
from keras_bigmodels.models.videobert.config import VIDEOBERT_PRESETS, videobert_params
from keras_bigmodels.models.videobert.data import VideoBERTPretrainingDataset
from keras_bigmodels.models.videobert.tasks import (
    VideoBERTPretrainer,
    evaluate_masked_visual_prediction,
    zero_shot_classify,
)
from keras_bigmodels.models.videobert.visual_words import PixelPCA, VideoTokenizer, kmeans
