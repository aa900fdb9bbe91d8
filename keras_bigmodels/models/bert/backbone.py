"""The BERT encoder, with RoBERTa's position numbering and ALBERT's factorization/sharing."""

import keras
from keras import ops

from keras_bigmodels.layers.embeddings import TransformerEmbedding
from keras_bigmodels.layers.feedforward import ACTIVATIONS
from keras_bigmodels.layers.transformer import TransformerEncoderBlock
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.utils import check_in, check_positive_int


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BertBackbone(Backbone):
    """Bidirectional Transformer encoder (BERT), also RoBERTa and ALBERT through options.

    Token + segment + learned position embeddings, a post-norm encoder and a tanh pooler
    on the first ([CLS]) token.

    Args:
        vocabulary_size: number of token ids.
        num_layers: encoder layers.
        num_heads: attention heads.
        hidden_dim: width H of the encoder.
        intermediate_dim: feed-forward width (4H in the papers).
        max_sequence_length: longest input.
        num_segments: segment (token type) ids; RoBERTa checkpoints use 1.
        embedding_dim: ALBERT's factorized embedding size E (< H), projected to H.
        share_layers: ALBERT's cross-layer sharing: one block's weights in every layer.
        position_offset: RoBERTa's padding_idx + 1 (2): real tokens take positions
            2, 3, ... counted over non-padding tokens, padding takes position 1, as in HF.
        activation: "gelu" (BERT, RoBERTa) or "gelu_approximate" (ALBERT), "relu", ...
        dropout: embedding/residual dropout; attention_dropout defaults to it.
        layer_norm_epsilon: 1e-12 (BERT, ALBERT) or 1e-5 (RoBERTa).
        initializer_range: std of the truncated-normal initializer (0.02).

    Inputs: dict of `token_ids`, `segment_ids`, `padding_mask`, each [batch, length] ints.
    Outputs: dict of `sequence_output` [batch, length, H] and `pooled_output` [batch, H].

    Example:
    >>> backbone = BertBackbone.from_preset("bert-tiny")
    >>> ids = np.array([[2, 17, 9, 3, 0]])
    >>> out = backbone({"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": ids > 0})
    >>> out["pooled_output"].shape
    (1, 128)
    """

    family = "bert"
    config_keys = (
        "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
        "max_sequence_length", "num_segments", "embedding_dim", "share_layers",
        "position_offset", "activation", "dropout", "attention_dropout",
        "layer_norm_epsilon", "initializer_range",
    )
    huggingface_mapping = "keras_bigmodels.models.bert.huggingface"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=512,
        num_segments=2,
        embedding_dim=None,
        share_layers=False,
        position_offset=0,
        activation="gelu",
        dropout=0.1,
        attention_dropout=None,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        dtype=None,
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_heads", num_heads)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("intermediate_dim", intermediate_dim)
        check_in("activation", activation, ACTIVATIONS)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        if not isinstance(position_offset, int) or position_offset < 0:
            raise ValueError(f"`position_offset` must be an int >= 0; received {position_offset!r}.")
        initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")

        embeddings = TransformerEmbedding(
            vocabulary_size,
            hidden_dim,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            embedding_dim=embedding_dim,
            position_offset=position_offset,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout=dropout,
            initializer=initializer,
            dtype=dtype,
            name="embeddings",
        )
        position_ids = None
        if position_offset:
            # HF RoBERTa: cumsum over real tokens, padding at row position_offset - 1.
            mask = ops.cast(padding_mask, "int32")
            position_ids = ops.cumsum(mask, axis=1) * mask + (position_offset - 1)
        x = embeddings(token_ids, segment_ids=segment_ids, position_ids=position_ids)

        def make_block(name):
            return TransformerEncoderBlock(
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                activation=activation,
                dropout=dropout,
                attention_dropout=attention_dropout,
                normalize_first=False,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=initializer,
                dtype=dtype,
                name=name,
            )

        shared = make_block("transformer_layer") if share_layers else None
        for i in range(num_layers):
            block = shared or make_block(f"transformer_layer_{i}")
            x = block(x, padding_mask=padding_mask)
        sequence_output = x
        pooler = keras.layers.Dense(
            hidden_dim, activation="tanh", kernel_initializer=initializer, dtype=dtype,
            name="pooler",
        )
        pooled_output = pooler(x[:, 0, :])

        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids,
                    "padding_mask": padding_mask},
            outputs={"sequence_output": sequence_output, "pooled_output": pooled_output},
            dtype=dtype,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.embedding_dim = embedding_dim
        self.share_layers = share_layers
        self.position_offset = position_offset
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.embeddings = embeddings
        self.pooler = pooler
        self.transformer_layers = (
            [shared] * num_layers if share_layers
            else [self.get_layer(f"transformer_layer_{i}") for i in range(num_layers)]
        )

    @property
    def token_embedding(self):
        """The token table, shared with the tied MLM output layer."""
        return self.embeddings.token_embedding

    def check_inputs(self, inputs):
        """Raise a clear ValueError when `inputs` lacks one of the three id inputs.

        Keras' own message does not say what to pass; a single-segment input still needs
        its `segment_ids` (zeros), as the graph adds the segment embedding of every token.

        Example:
        >>> backbone.check_inputs({"token_ids": ids, "padding_mask": ids > 0})
        Traceback (most recent call last):
        ValueError: BertBackbone needs `segment_ids` ...
        """
        names = ("token_ids", "segment_ids", "padding_mask")
        if not isinstance(inputs, dict):
            return  # a list in input order, or symbolic inputs while building a task
        missing = [name for name in names if name not in inputs]
        if not missing:
            return
        allowed = {
            "token_ids": f"ints in [0, {self.vocabulary_size})",
            "segment_ids": f"ints in [0, {max(self.num_segments, 1)}): the sentence (A/B) "
                           "of each token, all zeros for single-segment inputs",
            "padding_mask": "1 for real tokens, 0 for padding",
        }
        details = "; ".join(f"`{name}`: {allowed[name]}" for name in missing)
        raise ValueError(
            f"{type(self).__name__} needs a dict of `token_ids`, `segment_ids` and "
            f"`padding_mask`, each [batch, length]; missing {details}. Received keys "
            f"{sorted(inputs)}."
        )

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message does not say what to pass.
        self.check_inputs(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class RobertaBackbone(BertBackbone):
    """BERT's encoder with RoBERTa's defaults: positions after padding_idx=1, one segment.

    Example:
    >>> backbone = RobertaBackbone.from_preset("roberta-base")
    """

    def __init__(self, *args, num_segments=1, position_offset=2, layer_norm_epsilon=1e-5,
                 **kwargs):
        super().__init__(*args, num_segments=num_segments, position_offset=position_offset,
                         layer_norm_epsilon=layer_norm_epsilon, **kwargs)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class AlbertBackbone(BertBackbone):
    """BERT's encoder with ALBERT's factorized embedding and one shared layer.

    Example:
    >>> backbone = AlbertBackbone.from_preset("albert-base")
    """

    def __init__(self, *args, embedding_dim=128, share_layers=True,
                 activation="gelu_approximate", dropout=0.0, **kwargs):
        super().__init__(*args, embedding_dim=embedding_dim, share_layers=share_layers,
                         activation=activation, dropout=dropout, **kwargs)
