"""BERT, RoBERTa and ALBERT: backbone, presets, pretraining and fine-tuning tasks."""

from keras_bigmodels.models.bert.backbone import AlbertBackbone, BertBackbone, RobertaBackbone
from keras_bigmodels.models.bert.config import BERT_PRESETS, bert_params
from keras_bigmodels.models.bert.tasks import (
    BertClassifier,
    BertPretrainer,
    BertQuestionAnswerer,
    BertTokenClassifier,
    MaskedLMHead,
)
from keras_bigmodels.presets import register_presets

register_presets("bert", BERT_PRESETS, param_counter=bert_params)
from keras_bigmodels.models.bert.data import BertPretrainingDataset  # noqa: E402
