"""Reusable output heads of the task models."""

import keras
from keras import ops

from keras_bigmodels.layers.feedforward import get_activation


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class MaskedLMHead(keras.layers.Layer):
    """BERT's MLM head: dense + activation + LayerNorm, then the tied token table + bias.

    Args:
        token_embedding: the backbone's `TokenEmbedding` (output weights are tied to it).
        activation: of the transform ("gelu"; ALBERT "gelu_approximate").
        layer_norm_epsilon: of the transform's LayerNorm.

    Call args:
        inputs: [batch, length, hidden] sequence output.
        mask_positions: [batch, predictions] positions to predict (all when None); only
            those rows go through the vocabulary projection.

    Example:
    >>> head = MaskedLMHead(backbone.token_embedding)
    >>> logits = head(sequence_output, mask_positions)  # [batch, predictions, vocabulary]
    """

    def __init__(self, token_embedding, activation="gelu", layer_norm_epsilon=1e-12,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, mask_positions_shape=None):
        vocabulary_size, embedding_dim = self.token_embedding.input_dim, self.token_embedding.output_dim
        self._activation_fn = get_activation(self.activation)
        self.dense = keras.layers.Dense(embedding_dim, kernel_initializer=self.kernel_initializer,
                                        dtype=self.dtype_policy, name="dense")
        self.dense.build(inputs_shape)
        self.norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon,
                                                    dtype=self.dtype_policy, name="norm")
        self.norm.build(tuple(inputs_shape[:-1]) + (embedding_dim,))
        self.bias = self.add_weight(name="bias", shape=(vocabulary_size,), initializer="zeros")
        self.built = True

    def call(self, inputs, mask_positions=None):
        if mask_positions is not None:
            index = ops.cast(mask_positions, "int32")[:, :, None]
            inputs = ops.take_along_axis(inputs, index, axis=1)
        x = self.norm(self._activation_fn(self.dense(inputs)))
        logits = self.token_embedding(x, reverse=True)
        return logits + ops.cast(self.bias, logits.dtype)

    def compute_output_spec(self, inputs, mask_positions=None):
        length = inputs.shape[1] if mask_positions is None else mask_positions.shape[1]
        return keras.KerasTensor((inputs.shape[0], length, self.token_embedding.input_dim),
                                 dtype=self.compute_dtype)

    def get_config(self):
        # The tied table comes from the task that builds the head, never from this config.
        config = super().get_config()
        config.update(activation=self.activation, layer_norm_epsilon=self.layer_norm_epsilon,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
