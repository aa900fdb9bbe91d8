"""Transformer encoder and decoder blocks, pre- or post-norm."""

import keras

from keras_bigmodels.layers.attention import MultiHeadAttention
from keras_bigmodels.layers.feedforward import FeedForward
from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.utils import check_in

NORMS = ("layer_norm", "rms_norm")


def make_norm(norm, epsilon, name, dtype=None, use_bias=True):
    """LayerNorm (BERT, GPT, ViT) or T5's RMSNorm (scale only, no mean subtraction)."""
    check_in("norm", norm, NORMS)
    if norm == "rms_norm":
        return keras.layers.RMSNormalization(epsilon=epsilon, dtype=dtype, name=name)
    return keras.layers.LayerNormalization(epsilon=epsilon, center=use_bias, dtype=dtype,
                                           name=name)


class _Block(keras.layers.Layer):
    """Shared options and the residual wiring of encoder and decoder blocks."""

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        key_dim=None,
        num_key_value_heads=None,
        activation="gelu",
        gated=False,
        dropout=0.0,
        attention_dropout=None,
        activation_dropout=0.0,
        normalize_first=False,
        norm="layer_norm",
        layer_norm_epsilon=1e-5,
        use_bias=True,
        attention_scale=None,
        use_fused_attention=None,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_in("norm", norm, NORMS)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.key_dim = key_dim
        self.num_key_value_heads = num_key_value_heads
        self.activation = activation
        self.gated = gated
        self.dropout = dropout
        self.attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.activation_dropout = activation_dropout
        self.normalize_first = normalize_first
        self.norm = norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.use_fused_attention = use_fused_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )
        self.supports_masking = False

    def _attention(self, name):
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            num_key_value_heads=self.num_key_value_heads,
            use_bias=self.use_bias,
            dropout=self.attention_dropout,
            scale=self.attention_scale,
            use_fused=self.use_fused_attention,
            kernel_initializer=self.kernel_initializer,
            output_kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name):
        return make_norm(self.norm, self.layer_norm_epsilon, name, self.dtype_policy,
                         use_bias=self.use_bias)

    def _build_feedforward(self, input_shape):
        self.feedforward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            use_bias=self.use_bias,
            dropout=self.activation_dropout,
            kernel_initializer=self.kernel_initializer,
            output_kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy,
            name="feedforward",
        )
        self.feedforward.build(input_shape)
        self.feedforward_norm = self._norm("feedforward_norm")
        self.feedforward_norm.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _residual(self, x, norm, fn, training):
        """x + f(norm(x)) (pre-norm) or norm(x + f(x)) (post-norm); f may return extras."""
        out = fn(invoke(norm, x) if self.normalize_first else x)
        extras = ()
        if isinstance(out, tuple):
            out, *extras = out
        out = x + invoke(self.dropout_layer, out, training=training)
        if not self.normalize_first:
            out = invoke(norm, out)
        return (out, *extras)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            key_dim=self.key_dim,
            num_key_value_heads=self.num_key_value_heads,
            activation=self.activation,
            gated=self.gated,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation_dropout=self.activation_dropout,
            normalize_first=self.normalize_first,
            norm=self.norm,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_bias=self.use_bias,
            attention_scale=self.attention_scale,
            use_fused_attention=self.use_fused_attention,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            output_kernel_initializer=keras.initializers.serialize(self.output_kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class TransformerEncoderBlock(_Block):
    """Self-attention then feed-forward, each with a residual and a layer norm.

    Post-norm (`normalize_first=False`) is the original Transformer and BERT; pre-norm
    is GPT-2, ViT and T5.

    Args:
        num_heads, intermediate_dim: attention heads and feed-forward width.
        key_dim, num_key_value_heads: head size and grouped key/value heads.
        activation, gated: feed-forward activation and GLU variant.
        dropout: residual dropout; attention_dropout: on attention probabilities;
            activation_dropout: on the feed-forward's hidden layer (T5, BART).
        normalize_first: pre-norm when True.
        norm: "layer_norm" or "rms_norm"; layer_norm_epsilon its epsilon.
        use_bias: biases in projections and norms.
        attention_scale: logit scale (default 1/sqrt(key_dim)).

    Call args:
        inputs: [batch, length, hidden].
        padding_mask: [batch, length], 1 for real tokens.
        attention_mask: [batch, length, length].
        attention_bias: additive bias, e.g. from `RelativePositionBias`.
        use_causal_mask: restrict attention to earlier positions.

    Example:
    >>> block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32)
    >>> block(keras.ops.zeros((2, 5, 16))).shape
    (2, 5, 16)
    """

    def build(self, inputs_shape):
        self.self_attention = self._attention("self_attention")
        self.self_attention.build(inputs_shape)
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_norm.build(inputs_shape)
        self._build_feedforward(inputs_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, attention_bias=None,
             use_causal_mask=False, return_attention_scores=False, training=None):
        def attend(x):
            return invoke(
                self.self_attention,
                x,
                padding_mask=padding_mask,
                attention_mask=attention_mask,
                attention_bias=attention_bias,
                use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )

        x, *scores = self._residual(inputs, self.self_attention_norm, attend, training)
        (x,) = self._residual(
            x, self.feedforward_norm, lambda h: invoke(self.feedforward, h, training=training), training
        )
        return (x, scores[0]) if return_attention_scores else x

    def compute_output_spec(self, inputs, return_attention_scores=False, **kwargs):
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if return_attention_scores:
            scores = keras.KerasTensor(
                (inputs.shape[0], self.num_heads, inputs.shape[1], inputs.shape[1]),
                dtype=self.compute_dtype,
            )
            return out, scores
        return out


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class TransformerDecoderBlock(_Block):
    """Causal self-attention, optional cross-attention to an encoder, then feed-forward.

    Without `encoder_outputs` it is a GPT block; with them, the decoder block of the
    original Transformer, T5 and BART. The self-attention takes a KV cache for
    incremental decoding.

    Args:
        same as `TransformerEncoderBlock`.

    Call args:
        inputs: [batch, length, hidden].
        encoder_outputs: [batch, source_length, hidden] or None.
        padding_mask: [batch, length] decoder padding (or [batch, cache_length] with a cache).
        encoder_padding_mask: [batch, source_length].
        self_attention_bias, cross_attention_bias: additive logits biases.
        cache: [batch, 2, kv_heads, max_length, key_dim]; cache_update_index: int or scalar.
        cross_attention_cache: from `cross_attention_cache(encoder_outputs)`, instead of
            `encoder_outputs` in cached decoding.

    Returns:
        outputs, or (outputs, new_cache) when a cache is given.

    Example:
    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_dim=32)
    >>> block(keras.ops.zeros((2, 5, 16)), keras.ops.zeros((2, 7, 16))).shape
    (2, 5, 16)
    """

    def build(self, inputs_shape, encoder_outputs_shape=None):
        self.self_attention = self._attention("self_attention")
        self.self_attention.build(inputs_shape)
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_norm.build(inputs_shape)
        self.has_cross_attention = encoder_outputs_shape is not None
        if self.has_cross_attention:
            self.cross_attention = self._attention("cross_attention")
            self.cross_attention.build(inputs_shape, encoder_outputs_shape)
            self.cross_attention_norm = self._norm("cross_attention_norm")
            self.cross_attention_norm.build(inputs_shape)
        self._build_feedforward(inputs_shape)
        self.built = True

    def cross_attention_cache(self, encoder_outputs):
        """The cross-attention keys/values of `encoder_outputs`, computed once per
        `generate()`: [batch, 2, kv_heads, source_length, key_dim]; pass it back as
        `cross_attention_cache` at every decode step."""
        if not self.has_cross_attention:
            raise ValueError("This block was built without cross-attention.")
        return self.cross_attention.key_value_cache(encoder_outputs)

    def call(self, inputs, encoder_outputs=None, padding_mask=None, encoder_padding_mask=None,
             self_attention_bias=None, cross_attention_bias=None, cache=None,
             cache_update_index=None, use_causal_mask=True, cross_attention_cache=None,
             training=None):
        has_encoder = encoder_outputs is not None or cross_attention_cache is not None
        if has_encoder != self.has_cross_attention:
            raise ValueError(
                "`encoder_outputs` (or `cross_attention_cache`) must be given exactly when "
                "the block was built with cross-attention (built with it: "
                f"{self.has_cross_attention})."
            )

        def self_attend(x):
            return invoke(
                self.self_attention,
                x,
                padding_mask=padding_mask,
                attention_bias=self_attention_bias,
                use_causal_mask=use_causal_mask,
                cache=cache,
                cache_update_index=cache_update_index,
                training=training,
            )

        x, *new_cache = self._residual(inputs, self.self_attention_norm, self_attend, training)
        if self.has_cross_attention:
            (x,) = self._residual(
                x,
                self.cross_attention_norm,
                lambda h: self._cross_attend(h, encoder_outputs, cross_attention_cache,
                                             encoder_padding_mask, cross_attention_bias,
                                             training),
                training,
            )
        (x,) = self._residual(
            x, self.feedforward_norm, lambda h: invoke(self.feedforward, h, training=training), training
        )
        return (x, new_cache[0]) if cache is not None else x

    def _cross_attend(self, x, encoder_outputs, kv_cache, padding_mask, bias, training):
        if kv_cache is None:
            return invoke(self.cross_attention, x, encoder_outputs, padding_mask=padding_mask,
                          attention_bias=bias, training=training)
        out, _ = invoke(self.cross_attention, x, padding_mask=padding_mask, attention_bias=bias,
                        cache=kv_cache, training=training)
        return out

    def compute_output_spec(self, inputs, encoder_outputs=None, cache=None, **kwargs):
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if cache is not None:
            return out, keras.KerasTensor(cache.shape, dtype=cache.dtype)
        return out
