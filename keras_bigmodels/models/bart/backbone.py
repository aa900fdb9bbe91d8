"""BART backbone: a post-norm Transformer encoder-decoder with learned positions."""

import keras
from keras import ops

from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.layers.embeddings import TokenEmbedding
from keras_bigmodels.layers.positions import PositionEmbedding
from keras_bigmodels.layers.transformer import (TransformerDecoderBlock,
                                                TransformerEncoderBlock, make_norm)
from keras_bigmodels.models.bart.config import POSITION_OFFSET
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.models.seq2seq_lm import Seq2SeqBackboneMethods
from keras_bigmodels.utils import check_positive_int, check_transformer_dims


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BartEmbedding(keras.layers.Layer):
    """Positions and layer norm of one BART stack, on top of the shared token vectors.

    x = LayerNorm(scale * token_vectors + P[start + 2 : start + 2 + length]), then dropout:
    the position table has `max_sequence_length + 2` rows and BART reads it from row 2.

    Args:
        max_sequence_length: longest input (BART: 1024).
        scale: multiply the token vectors by sqrt(hidden) (`scale_embedding`; False in BART).
        layer_norm_epsilon, dropout, initializer: as the backbone's.
        input_name: the input named in the too-long error.

    Call args:
        token_vectors: [batch, length, hidden] from the shared token table.
        start_index: position of the first token (incremental decoding).

    Example:
    >>> BartEmbedding(16)(keras.ops.zeros((2, 5, 8))).shape
    (2, 5, 8)
    """

    def __init__(self, max_sequence_length, scale=False, layer_norm_epsilon=1e-5, dropout=0.0,
                 initializer="glorot_uniform", input_name="token_ids", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_sequence_length", max_sequence_length)
        self.max_sequence_length = max_sequence_length
        self.scale = scale
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.initializer = keras.initializers.get(initializer)
        self.input_name = input_name

    def build(self, token_vectors_shape):
        self.position_embedding = PositionEmbedding(
            self.max_sequence_length + POSITION_OFFSET, initializer=self.initializer,
            dtype=self.dtype_policy, name="position_embedding")
        self.position_embedding.build(token_vectors_shape)
        self.embedding_norm = make_norm("layer_norm", self.layer_norm_epsilon, "embedding_norm",
                                        self.dtype_policy)
        self.embedding_norm.build(token_vectors_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, token_vectors, start_index=0, training=None):
        length = token_vectors.shape[1]
        if isinstance(start_index, int) and length is not None:
            if length + start_index > self.max_sequence_length:
                raise ValueError(
                    f"`{self.input_name}` reaches position {length + start_index}, beyond "
                    f"BART's {self.max_sequence_length} learned positions "
                    f"(max_sequence_length={self.max_sequence_length}); truncate the input.")
        x = token_vectors
        if self.scale:
            x = x * ops.cast(float(token_vectors.shape[-1]) ** 0.5, x.dtype)
        x = x + invoke(self.position_embedding, x, start_index=start_index + POSITION_OFFSET)
        x = invoke(self.embedding_norm, x)
        return invoke(self.dropout_layer, x, training=training)

    def compute_output_spec(self, token_vectors, start_index=0, training=None):
        return keras.KerasTensor(token_vectors.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_sequence_length=self.max_sequence_length,
            scale=self.scale,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            initializer=keras.initializers.serialize(self.initializer),
            input_name=self.input_name,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class FinalLogitsBias(keras.layers.Layer):
    """BART's `final_logits_bias`: a [vocabulary] bias added to the logits, not trained.

    transformers keeps it as a buffer (zeros in the released checkpoints; Marian-derived
    models fill it); it is non-trainable here as there.

    Example:
    >>> FinalLogitsBias(10)(keras.ops.zeros((2, 3, 10))).shape
    (2, 3, 10)
    """

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("vocabulary_size", vocabulary_size)
        self.vocabulary_size = vocabulary_size

    def build(self, input_shape=None):
        self.bias = self.add_weight(name="bias", shape=(self.vocabulary_size,),
                                    initializer="zeros", trainable=False)
        self.built = True

    def call(self, logits):
        return logits + ops.cast(self.bias, logits.dtype)

    def compute_output_spec(self, logits):
        return keras.KerasTensor(logits.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BartBackbone(Seq2SeqBackboneMethods, Backbone):
    """BART's encoder-decoder (Lewis et al. 2020): post-norm blocks, learned positions.

    Both stacks read one shared token table (also the tied output layer), add their own
    learned positions (BART's offset of 2) and layer-normalize the sum; every block is
    post-norm with exact GELU; there is no final layer norm. `logits()` projects decoder
    states on the shared table and adds `final_logits_bias`.

    Inputs: a dict of "encoder_token_ids", "encoder_padding_mask" [batch, source] and
    "decoder_token_ids", "decoder_padding_mask" [batch, target]. Outputs: a dict of
    "encoder_sequence_output" and "decoder_sequence_output".

    Args:
        vocabulary_size: number of token ids (BART: 50265).
        num_layers: encoder blocks (and decoder blocks unless `num_decoder_layers`).
        num_heads: attention heads.
        hidden_dim: model width (d_model).
        intermediate_dim: feed-forward width.
        max_sequence_length: learned positions of each stack (BART: 1024).
        num_decoder_layers: decoder blocks (default `num_layers`).
        key_dim: head size (default hidden_dim // num_heads).
        activation: feed-forward activation ("gelu", exact, in BART).
        dropout: residual and embedding dropout (0.1).
        attention_dropout: dropout on attention probabilities (0.0).
        layer_norm_epsilon: of every layer norm (1e-5).
        scale_embedding: multiply token vectors by sqrt(hidden_dim) (False in BART).
        initializer_range: std of the normal initializer (0.02).
        dtype: dtype policy.

    Example:
    >>> backbone = BartBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                         hidden_dim=32, intermediate_dim=64, max_sequence_length=16)
    >>> ids = keras.ops.ones((2, 8), "int32")
    >>> out = backbone({"encoder_token_ids": ids, "encoder_padding_mask": ids,
    ...                 "decoder_token_ids": ids, "decoder_padding_mask": ids})
    >>> out["decoder_sequence_output"].shape
    (2, 8, 32)
    """

    family = "bart"
    huggingface_mapping = "keras_bigmodels.models.bart.huggingface"
    config_keys = (
        "vocabulary_size", ("num_layers", "num_encoder_layers"), "num_heads", "hidden_dim",
        "intermediate_dim", "max_sequence_length", "num_decoder_layers", "key_dim",
        "activation", "dropout", "attention_dropout", "layer_norm_epsilon",
        "scale_embedding", "initializer_range", "use_fused_attention",
    )

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                 max_sequence_length=1024, num_decoder_layers=None, key_dim=None,
                 activation="gelu", dropout=0.1, attention_dropout=0.0, layer_norm_epsilon=1e-5,
                 scale_embedding=False, initializer_range=0.02, use_fused_attention=None,
                 dtype=None, **kwargs):
        check_transformer_dims(
            key_dim, vocabulary_size=vocabulary_size, num_layers=num_layers,
            num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length, num_decoder_layers=num_decoder_layers)
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        block_kwargs = dict(
            num_heads=num_heads, intermediate_dim=intermediate_dim, key_dim=key_dim,
            activation=activation, dropout=dropout, attention_dropout=attention_dropout,
            normalize_first=False, layer_norm_epsilon=layer_norm_epsilon,
            use_fused_attention=use_fused_attention, kernel_initializer=init, dtype=dtype)
        token_embedding = TokenEmbedding(vocabulary_size, hidden_dim, embeddings_initializer=init,
                                         dtype=dtype, name="token_embedding")
        embedding_kwargs = dict(scale=scale_embedding, layer_norm_epsilon=layer_norm_epsilon,
                                dropout=dropout, initializer=init, dtype=dtype)
        encoder_embedding = BartEmbedding(max_sequence_length, input_name="encoder_token_ids",
                                          name="encoder_embedding", **embedding_kwargs)
        decoder_embedding = BartEmbedding(max_sequence_length, input_name="decoder_token_ids",
                                          name="decoder_embedding", **embedding_kwargs)
        encoder_layers = [TransformerEncoderBlock(name=f"encoder_layer_{i}", **block_kwargs)
                          for i in range(num_layers)]
        decoder_layers = [TransformerDecoderBlock(name=f"decoder_layer_{i}", **block_kwargs)
                          for i in range(num_decoder_layers or num_layers)]

        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                         "decoder_padding_mask")
        }
        x = encoder_embedding(token_embedding(inputs["encoder_token_ids"]))
        for block in encoder_layers:
            x = block(x, padding_mask=inputs["encoder_padding_mask"])
        encoder_output = x
        y = decoder_embedding(token_embedding(inputs["decoder_token_ids"]))
        for block in decoder_layers:
            y = block(y, encoder_output, padding_mask=inputs["decoder_padding_mask"],
                      encoder_padding_mask=inputs["encoder_padding_mask"])
        outputs = {"encoder_sequence_output": encoder_output, "decoder_sequence_output": y}
        # torch modules refuse attributes before Model.__init__, so layers are set after.
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.token_embedding = token_embedding
        self.encoder_embedding = encoder_embedding
        self.decoder_embedding = decoder_embedding
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        # Outside the functional graph (only the output layer uses it); the model still
        # tracks, saves and counts it as an attribute.
        self.final_logits_bias = FinalLogitsBias(vocabulary_size, dtype=dtype,
                                                 name="final_logits_bias")
        self.final_logits_bias.build()

        self.vocabulary_size = vocabulary_size
        self.num_encoder_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        # The decoder has as many learned positions as the encoder.
        self.decoder_max_sequence_length = max_sequence_length
        self.key_dim = key_dim
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.scale_embedding = scale_embedding
        self.initializer_range = initializer_range
        self.use_fused_attention = use_fused_attention

    # Decoding protocol (see keras_bigmodels.models.seq2seq_lm) ---------------------------
    def encode(self, encoder_token_ids, encoder_padding_mask):
        """The encoder stack: [batch, source] ids and mask -> [batch, source, hidden]."""
        x = invoke(self.encoder_embedding, invoke(self.token_embedding, encoder_token_ids))
        for block in self.encoder_layers:
            x = invoke(block, x, padding_mask=encoder_padding_mask)
        return x

    def call_with_cache(self, decoder_token_ids, cache, cache_update_index,
                        encoder_padding_mask):
        """Decoder states of ids written at `cache_update_index`, and the updated cache.

        Positions start at `cache_update_index` (+ BART's offset of 2 into the table).
        """
        y = invoke(self.decoder_embedding, invoke(self.token_embedding, decoder_token_ids),
                   start_index=cache_update_index)
        return self.cached_decoder_layers(y, cache, cache_update_index, encoder_padding_mask)

    def logits(self, decoder_hidden):
        """Vocabulary logits: decoder states on the shared table, plus final_logits_bias."""
        logits = invoke(self.token_embedding, decoder_hidden, reverse=True)
        return invoke(self.final_logits_bias, logits)
