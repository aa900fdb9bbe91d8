"""BERT, RoBERTa and ALBERT: backbone, presets, pretraining and fine-tuning tasks."""

from keras_bigmodels.models.bert.backbone import AlbertBackbone, BertBackbone, RobertaBackbone
from keras_bigmodels.models.bert.config import BERT_PRESETS, bert_params  # registers presets
from keras_bigmodels.models.bert.tasks import (
    BertClassifier,
    BertPretrainer,
    BertQuestionAnswerer,
    BertTokenClassifier,
)
from keras_bigmodels.models.bert.data import BertPretrainingDataset
