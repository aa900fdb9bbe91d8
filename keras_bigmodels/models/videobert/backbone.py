"""VideoBERT's network: BERT's encoder over one vocabulary of word pieces and visual words."""

import keras
import numpy as np

from keras_bigmodels.models.bert.backbone import BertBackbone
from keras_bigmodels.utils import check_positive_int


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class VideoBERTBackbone(BertBackbone):
    """BERT over `[CLS] text [>] visual words [SEP]` (Sun et al. 2019).

    VideoBERT keeps BERT's architecture and extends its vocabulary: ids below
    `text_vocabulary_size` are word pieces (the special tokens and `[>]` among them), the
    next `visual_vocabulary_size` ids are visual words (see `VideoTokenizer`). Segment 0
    marks the text side, segment 1 the video side.

    Args:
        text_vocabulary_size: word pieces, special tokens included.
        visual_vocabulary_size: visual words (k ** levels of the video tokenizer).
        num_layers, num_heads, hidden_dim, intermediate_dim, max_sequence_length,
            num_segments, activation, dropout, attention_dropout, layer_norm_epsilon,
            initializer_range: as in `BertBackbone`.

    Inputs: dict of `token_ids`, `segment_ids`, `padding_mask`, each [batch, length] ints.
    Outputs: dict of `sequence_output` [batch, length, H] and `pooled_output` [batch, H].

    Example:
    >>> backbone = VideoBERTBackbone(text_vocabulary_size=64, visual_vocabulary_size=144,
    ...                              num_layers=2, num_heads=2, hidden_dim=32,
    ...                              intermediate_dim=64)
    >>> ids = np.array([[2, 10, 5, 70, 80, 3]])
    >>> segments = np.array([[0, 0, 0, 1, 1, 1]])
    >>> backbone({"token_ids": ids, "segment_ids": segments,
    ...           "padding_mask": np.ones_like(ids)})["pooled_output"].shape
    (1, 32)
    """

    family = "videobert"
    config_keys = ("text_vocabulary_size", "visual_vocabulary_size") + tuple(
        key for key in BertBackbone.config_keys if key != "vocabulary_size")
    # VideoBERT checkpoints are not in transformers; start from a BERT one with `from_bert`.
    huggingface_mapping = None

    def __init__(self, text_vocabulary_size, visual_vocabulary_size, num_layers, num_heads,
                 hidden_dim, intermediate_dim, **kwargs):
        check_positive_int("text_vocabulary_size", text_vocabulary_size)
        check_positive_int("visual_vocabulary_size", visual_vocabulary_size)
        super().__init__(text_vocabulary_size + visual_vocabulary_size, num_layers, num_heads,
                         hidden_dim, intermediate_dim, **kwargs)
        self.text_vocabulary_size = text_vocabulary_size
        self.visual_vocabulary_size = visual_vocabulary_size

    @classmethod
    def from_bert(cls, bert_backbone, visual_vocabulary_size, seed=0):
        """A VideoBERT initialized from a (pretrained) BERT, as the paper does.

        Every weight is copied; the token table keeps BERT's rows for the word pieces and
        gets new rows, drawn like BERT's initializer, for the visual words.

        Args:
            bert_backbone: a `BertBackbone` (e.g. `BertBackbone.from_huggingface(dir)`).
            visual_vocabulary_size: number of visual words.
            seed: of the new rows.

        Example:
        >>> bert = BertBackbone.from_huggingface("checkpoints/bert-base-uncased")
        >>> videobert = VideoBERTBackbone.from_bert(bert, visual_vocabulary_size=20736)
        """
        if not isinstance(bert_backbone, BertBackbone) or isinstance(bert_backbone, cls):
            raise ValueError(f"`bert_backbone` must be a BertBackbone; received "
                             f"{type(bert_backbone).__name__}.")
        config = bert_backbone.get_config()
        config.pop("name", None)
        text_vocabulary_size = config.pop("vocabulary_size")
        model = cls(text_vocabulary_size=text_vocabulary_size,
                    visual_vocabulary_size=visual_vocabulary_size, **config)
        table = model.token_embedding.embeddings
        for target, source in zip(model.weights, bert_backbone.weights):
            if target is table:
                rows = np.random.default_rng(seed).normal(
                    0.0, bert_backbone.initializer_range,
                    size=(visual_vocabulary_size, table.shape[1]))
                # BERT's truncated normal: no draw beyond two standard deviations.
                limit = 2 * bert_backbone.initializer_range
                rows = np.clip(rows, -limit, limit)
                source_value = keras.ops.convert_to_numpy(source)
                target.assign(np.concatenate([source_value, rows.astype(source_value.dtype)]))
            else:
                if tuple(target.shape) != tuple(source.shape):
                    raise ValueError(f"Weight {target.path} has shape {target.shape} but BERT's "
                                     f"{source.path} has {source.shape}.")
                target.assign(source)
        return model
