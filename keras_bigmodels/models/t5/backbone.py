"""T5 backbone: a pre-norm encoder-decoder with RMS norms and bucketed relative positions."""

import keras
from keras import ops

from keras_bigmodels.backend.decoding import active as in_eager_decoding
from keras_bigmodels.backend.decoding import invoke, memo
from keras_bigmodels.layers.attention import masked_bias
from keras_bigmodels.layers.embeddings import TokenEmbedding
from keras_bigmodels.layers.positions import RelativePositionBias
from keras_bigmodels.layers.transformer import (
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    make_norm,
)
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.models.seq2seq_lm import Seq2SeqBackboneMethods
from keras_bigmodels.utils import check_transformer_dims


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SequenceRelativePositionBias(RelativePositionBias):
    """`RelativePositionBias` sized by a [batch, length, ...] tensor, for functional graphs.

    A functional graph only records calls on tensors, so this takes the queries' tensor
    instead of bare lengths. Keys default to the same positions (self-attention).

    Call args:
        inputs: [batch, query_length, ...]; only its length is used.
        key_length: number of keys (a KV cache's length); defaults to query_length.
        query_offset: absolute position of the first query (incremental decoding).
        padding_mask: optional [batch, key_length] (1 for real keys), and
        use_causal_mask: whether query i only sees keys j <= i; folded into the bias
            (`masked_bias`), so that a stack merges its masks once, not in every layer.

    Returns:
        [1, num_heads, query_length, key_length], or [batch, ...] with a padding mask.

    Example:
    >>> SequenceRelativePositionBias(num_heads=2)(keras.ops.zeros((1, 5, 8))).shape
    (1, 2, 5, 5)
    """

    def call(self, inputs, key_length=None, query_offset=0, padding_mask=None,
             use_causal_mask=False):
        query_length = ops.shape(inputs)[1]
        bias = super().call(query_length=query_length,
                            key_length=query_length if key_length is None else key_length,
                            query_offset=query_offset)
        if padding_mask is None and not use_causal_mask:
            return bias
        return masked_bias(bias, padding_mask, causal=use_causal_mask)

    def compute_output_spec(self, inputs, key_length=None, query_offset=0, padding_mask=None,
                            use_causal_mask=False):
        length = inputs.shape[1]
        batch = 1 if padding_mask is None else padding_mask.shape[0]
        return keras.KerasTensor(
            (batch, self.num_heads, length, length if key_length is None else key_length),
            dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class T5Backbone(Seq2SeqBackboneMethods, Backbone):
    """The T5 encoder-decoder (T5 v1.0, T5 v1.1, Flan-T5, mT5), or its encoder alone.

    Pre-norm blocks with RMS norms (a scale, no bias, no mean subtraction), no biases in
    any projection, unscaled attention logits (T5 folds 1/sqrt(key_dim) into the query
    initializer), and a bucketed relative position bias computed once per stack (by the
    stack's first layer in the paper) and shared by every layer: bidirectional buckets in
    the encoder, causal ones in the decoder; cross-attention has no position bias. One
    token table feeds both stacks.

    Inputs: a dict with "encoder_token_ids" and "encoder_padding_mask" [batch, source]
    and, unless `encoder_only`, "decoder_token_ids" and "decoder_padding_mask"
    [batch, target]. Outputs: a dict with "encoder_sequence_output" [batch, source,
    hidden] and, unless `encoder_only`, "decoder_sequence_output" [batch, target, hidden]
    (both after their stack's final norm).

    Args:
        vocabulary_size: number of token ids.
        num_layers: encoder layers (and decoder layers unless `num_decoder_layers`).
        num_heads: attention heads.
        hidden_dim: model width (d_model).
        intermediate_dim: feed-forward width (d_ff).
        key_dim: head size (d_kv); defaults to hidden_dim // num_heads.
        num_decoder_layers: decoder layers; defaults to `num_layers`.
        activation: feed-forward activation: "relu" (v1.0) or "gelu_approximate" (v1.1's
            gated-GELU, HF's gelu_new).
        gated: gated feed-forward, act(x W_gate) * (x W_in) (v1.1, Flan-T5, mT5).
        dropout: dropout on the embeddings, every residual branch, the attention
            probabilities, the feed-forward hidden layer and each stack's output (HF's
            `dropout_rate`, used at all five places).
        layer_norm_epsilon: epsilon of the RMS norms.
        relative_attention_num_buckets, relative_attention_max_distance: the bias buckets.
        tie_embeddings: the output layer is the token table (v1.0); False adds an untied
            [vocabulary, hidden] table `output_token_embedding` (v1.1, Flan-T5, mT5).
        scale_decoder_output: multiply the decoder output by hidden_dim**-0.5 before the
            output layer; defaults to `tie_embeddings` (T5 v1.0 does it because its output
            layer is the unit-variance token table).
        encoder_only: only the encoder stack (HF's `T5EncoderModel`, a text encoder).
        use_fused_attention: see `MultiHeadAttention(use_fused=...)`.
        dtype: dtype policy.

    Example:
    >>> backbone = T5Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                       hidden_dim=32, intermediate_dim=64)
    >>> ids = keras.ops.ones((2, 6), "int32")
    >>> out = backbone({"encoder_token_ids": ids, "encoder_padding_mask": ids,
    ...                 "decoder_token_ids": ids[:, :4], "decoder_padding_mask": ids[:, :4]})
    >>> out["decoder_sequence_output"].shape
    (2, 4, 32)
    """

    family = "t5"
    # Reads "t5"/"mt5" T5ForConditionalGeneration and T5EncoderModel dirs (an encoder-only
    # backbone); `encoder_only=True` keeps just the encoder of a full checkpoint.
    huggingface_mapping = "keras_bigmodels.models.t5.huggingface"
    config_keys = (
        "vocabulary_size", ("num_layers", "num_encoder_layers"), "num_heads", "hidden_dim",
        "intermediate_dim", "key_dim", "num_decoder_layers", "activation", "gated", "dropout",
        "layer_norm_epsilon", "relative_attention_num_buckets",
        "relative_attention_max_distance", "tie_embeddings", "scale_decoder_output",
        "encoder_only", "use_fused_attention",
    )

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                 key_dim=None, num_decoder_layers=None, activation="relu", gated=False,
                 dropout=0.1, layer_norm_epsilon=1e-6, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, tie_embeddings=True,
                 scale_decoder_output=None, encoder_only=False, use_fused_attention=None,
                 dtype=None, **kwargs):
        check_transformer_dims(
            key_dim, vocabulary_size=vocabulary_size, num_layers=num_layers,
            num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            relative_attention_num_buckets=relative_attention_num_buckets,
            relative_attention_max_distance=relative_attention_max_distance,
            num_decoder_layers=num_decoder_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received {dropout}.")
        head_dim = key_dim or hidden_dim // num_heads
        decoder_depth = num_decoder_layers or num_layers
        if scale_decoder_output is None:
            scale_decoder_output = tie_embeddings

        # Mesh TensorFlow's initializers (HF's `_init_weights`): unit-variance token table,
        # fan-in normals elsewhere. The query's extra 1/sqrt(key_dim) is applied below.
        fan_in = keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal")
        input_init = keras.initializers.RandomNormal(stddev=hidden_dim ** -0.5)

        def block_kwargs(i, stack):
            return dict(
                num_heads=num_heads, intermediate_dim=intermediate_dim, key_dim=key_dim,
                activation=activation, gated=gated, dropout=dropout,
                activation_dropout=dropout, normalize_first=True,
                norm="rms_norm", layer_norm_epsilon=layer_norm_epsilon, use_bias=False,
                attention_scale=1.0, use_fused_attention=use_fused_attention,
                kernel_initializer=input_init, output_kernel_initializer=fan_in,
                dtype=dtype, name=f"{stack}_layer_{i}")

        def bias_layer(stack, bidirectional):
            return SequenceRelativePositionBias(
                num_heads=num_heads, num_buckets=relative_attention_num_buckets,
                max_distance=relative_attention_max_distance, bidirectional=bidirectional,
                initializer=input_init, dtype=dtype, name=f"{stack}_relative_position_bias")

        token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
            dtype=dtype, name="token_embedding")
        encoder_position_bias = bias_layer("encoder", bidirectional=True)
        encoder_layers = [TransformerEncoderBlock(**block_kwargs(i, "encoder"))
                          for i in range(num_layers)]
        encoder_final_norm = make_norm("rms_norm", layer_norm_epsilon, "encoder_final_norm",
                                       dtype)
        encoder_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="encoder_dropout")

        encoder_token_ids = keras.Input(shape=(None,), dtype="int32", name="encoder_token_ids")
        encoder_padding_mask = keras.Input(shape=(None,), dtype="int32",
                                           name="encoder_padding_mask")
        inputs = {"encoder_token_ids": encoder_token_ids,
                  "encoder_padding_mask": encoder_padding_mask}
        x = encoder_dropout(token_embedding(encoder_token_ids))
        # The position bias with the padding mask folded in, once for every layer.
        bias = encoder_position_bias(x, padding_mask=encoder_padding_mask)
        for block in encoder_layers:
            x = block(x, attention_bias=bias)
        encoder_output = encoder_dropout(encoder_final_norm(x))
        outputs = {"encoder_sequence_output": encoder_output}

        decoder_position_bias, decoder_layers = None, []
        decoder_final_norm = decoder_dropout = None
        if not encoder_only:
            decoder_position_bias = bias_layer("decoder", bidirectional=False)
            decoder_layers = [TransformerDecoderBlock(**block_kwargs(i, "decoder"))
                              for i in range(decoder_depth)]
            decoder_final_norm = make_norm("rms_norm", layer_norm_epsilon,
                                           "decoder_final_norm", dtype)
            decoder_dropout = keras.layers.Dropout(dropout, dtype=dtype,
                                                   name="decoder_dropout")
            decoder_token_ids = keras.Input(shape=(None,), dtype="int32",
                                            name="decoder_token_ids")
            decoder_padding_mask = keras.Input(shape=(None,), dtype="int32",
                                               name="decoder_padding_mask")
            inputs.update(decoder_token_ids=decoder_token_ids,
                          decoder_padding_mask=decoder_padding_mask)
            y = decoder_dropout(token_embedding(decoder_token_ids))
            self_bias = decoder_position_bias(y, padding_mask=decoder_padding_mask,
                                              use_causal_mask=True)
            for block in decoder_layers:
                y = block(y, encoder_output, encoder_padding_mask=encoder_padding_mask,
                          self_attention_bias=self_bias, use_causal_mask=False)
            outputs["decoder_sequence_output"] = decoder_dropout(decoder_final_norm(y))

        # torch modules refuse attributes before Model.__init__, so layers are set after.
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.token_embedding = token_embedding
        self.encoder_position_bias = encoder_position_bias
        self.encoder_layers = encoder_layers
        self.encoder_final_norm = encoder_final_norm
        self.encoder_dropout = encoder_dropout
        self.decoder_position_bias = decoder_position_bias
        self.decoder_layers = decoder_layers
        self.decoder_final_norm = decoder_final_norm
        self.decoder_dropout = decoder_dropout
        self.output_token_embedding = token_embedding
        if not tie_embeddings and not encoder_only:
            # Outside the functional graph (its only use is the task's output layer);
            # a Keras model still tracks, saves and counts it as an attribute. Named so
            # that the rule table shards it like the input table.
            self.output_token_embedding = TokenEmbedding(
                vocabulary_size, hidden_dim, embeddings_initializer=input_init, dtype=dtype,
                name="output_token_embedding")
            self.output_token_embedding.build((None, None))

        # T5 does not scale attention logits by 1/sqrt(key_dim); Mesh TensorFlow folds that
        # factor into the query projection's initializer instead.
        for block in encoder_layers + decoder_layers:
            attentions = [block.self_attention]
            if getattr(block, "has_cross_attention", False):
                attentions.append(block.cross_attention)
            for attention in attentions:
                kernel = attention.query_dense.kernel
                kernel.assign(kernel * ops.cast(head_dim ** -0.5, kernel.dtype))

        self.vocabulary_size = vocabulary_size
        self.num_encoder_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.key_dim = key_dim
        self.activation = activation
        self.gated = gated
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.tie_embeddings = tie_embeddings
        self.scale_decoder_output = scale_decoder_output
        self.encoder_only = encoder_only
        self.use_fused_attention = use_fused_attention
        # Relative positions put no bound on the input length.
        self.max_sequence_length = None

    # Decoding protocol (see keras_bigmodels.models.seq2seq_lm) ---------------------------
    def encode(self, encoder_token_ids, encoder_padding_mask):
        """The encoder stack: [batch, source] ids and mask -> [batch, source, hidden]."""
        x = invoke(self.token_embedding, encoder_token_ids)
        bias = invoke(self.encoder_position_bias, x, padding_mask=encoder_padding_mask)
        for block in self.encoder_layers:
            x = invoke(block, x, attention_bias=bias)
        return invoke(self.encoder_final_norm, x)

    def call_with_cache(self, decoder_token_ids, cache, cache_update_index,
                        encoder_padding_mask):
        """Decoder hidden states of ids written at `cache_update_index`, and the cache.

        The causal relative bias is computed for queries at cache_update_index.. against
        every cache position; the causal mask hides the positions not written yet.
        """
        self.check_decoder()
        y = invoke(self.token_embedding, decoder_token_ids)
        max_length = ops.shape(cache["self"][0])[3]
        if in_eager_decoding() and isinstance(cache_update_index, int):
            # Eager decoding (torch): the bias of every buffer position against every
            # other, once per generate() (it depends on the weights only); each step reads
            # its query rows instead of bucketing distances again (~15 small ops a step).
            table = memo((id(self), "decoder_bias", max_length), lambda: invoke(
                self.decoder_position_bias, ops.zeros((1, max_length, 1)),
                key_length=max_length))
            length = ops.shape(y)[1]
            bias = table[:, :, cache_update_index:cache_update_index + length]
        else:
            bias = invoke(self.decoder_position_bias, y, key_length=max_length,
                          query_offset=cache_update_index)
        y, cache = self.cached_decoder_layers(y, cache, cache_update_index,
                                              encoder_padding_mask, self_attention_bias=bias)
        return invoke(self.decoder_final_norm, y), cache

    def logits(self, decoder_hidden):
        """Vocabulary logits of decoder outputs: the (scaled) tied table or the untied one."""
        self.check_decoder()
        if self.scale_decoder_output:
            decoder_hidden = decoder_hidden * ops.cast(self.hidden_dim ** -0.5,
                                                       decoder_hidden.dtype)
        return invoke(self.output_token_embedding, decoder_hidden, reverse=True)
