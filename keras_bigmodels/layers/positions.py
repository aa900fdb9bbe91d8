"""Position information: learned, sinusoidal, rotary, and bucketed relative bias."""

import math

import keras
from keras import ops

from keras_bigmodels.utils import check_positive_int, check_sequence_length


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions (BERT, GPT-2, ViT), added by the caller.

    Args:
        max_sequence_length: number of learned positions.
        initializer: initializer of the table.

    Call args:
        inputs: [batch, length, hidden] (only the shape is used).
        start_index: position of the first token (for incremental decoding).

    Example:
    >>> PositionEmbedding(16)(keras.ops.zeros((2, 8, 4))).shape
    (8, 4)
    """

    def __init__(self, max_sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_sequence_length", max_sequence_length)
        self.max_sequence_length = max_sequence_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_sequence_length, input_shape[-1]),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        length = inputs.shape[1]
        if isinstance(start_index, int):
            check_sequence_length(
                None if length is None else length + start_index, self.max_sequence_length
            )
        table = ops.convert_to_tensor(self.embeddings)
        if isinstance(start_index, int) and length is not None:
            return table[start_index:start_index + length]
        return ops.slice(table, (start_index, 0), (ops.shape(inputs)[1], table.shape[1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[1], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            max_sequence_length=self.max_sequence_length,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


def sinusoidal_table(length, dim, max_wavelength=10000.0, start_index=0):
    """The original Transformer's PE(pos, 2i) = sin(pos / 10000^(2i/d)), cos for 2i+1."""
    positions = ops.cast(ops.arange(length) + start_index, "float32")[:, None]
    rates = ops.exp(
        ops.cast(ops.arange(0, dim, 2), "float32") * (-math.log(max_wavelength) / dim)
    )
    angles = positions * rates[None, :]
    # Interleave so that even channels hold sin and odd channels hold cos.
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(table, (length, -1))[:, :dim]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Fixed sinusoidal positions of "Attention Is All You Need" (section 3.5).

    Example:
    >>> SinusoidalPositionEncoding()(keras.ops.zeros((1, 6, 8))).shape
    (6, 8)
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        table = sinusoidal_table(
            ops.shape(inputs)[1], inputs.shape[-1], self.max_wavelength, start_index
        )
        return ops.cast(table, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[1], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(max_wavelength=self.max_wavelength)
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoFormer) applied to query or key heads.

    Rotates channel pairs (i, i + d/2) by angle pos * base^(-2i/d), the "half rotation"
    layout used by GPT-NeoX and LLaMA.

    Args:
        max_wavelength: the base of the frequencies.
        rotary_fraction: fraction of each head's channels that are rotated.

    Call args:
        inputs: [batch, length, heads, head_dim].
        start_index: position of the first token.

    Example:
    >>> x = keras.random.normal((1, 5, 2, 8))
    >>> RotaryEmbedding()(x).shape
    (1, 5, 2, 8)
    """

    def __init__(self, max_wavelength=10000.0, rotary_fraction=1.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < rotary_fraction <= 1.0:
            raise ValueError(f"`rotary_fraction` must be in (0, 1]; received {rotary_fraction}.")
        self.max_wavelength = max_wavelength
        self.rotary_fraction = rotary_fraction
        self.built = True

    def call(self, inputs, start_index=0):
        head_dim = inputs.shape[-1]
        rotary_dim = int(head_dim * self.rotary_fraction) // 2 * 2
        rotated, passed = inputs[..., :rotary_dim], inputs[..., rotary_dim:]
        inv_freq = 1.0 / self.max_wavelength ** (
            ops.cast(ops.arange(0, rotary_dim, 2), "float32") / rotary_dim
        )
        positions = ops.cast(ops.arange(ops.shape(inputs)[1]) + start_index, "float32")
        angles = positions[:, None] * inv_freq[None, :]
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]
        cos = ops.cast(ops.cos(angles), inputs.dtype)
        sin = ops.cast(ops.sin(angles), inputs.dtype)
        x1, x2 = ops.split(rotated, 2, axis=-1)
        half_rotated = ops.concatenate([-x2, x1], axis=-1)
        out = rotated * cos + half_rotated * sin
        if rotary_dim < head_dim:
            out = ops.concatenate([out, passed], axis=-1)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(max_wavelength=self.max_wavelength, rotary_fraction=self.rotary_fraction)
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class RelativePositionBias(keras.layers.Layer):
    """T5's bucketed relative position bias, added to the attention logits.

    Relative distances are put into `num_buckets` buckets: half exact for small
    distances, half logarithmic up to `max_distance`. Bidirectional buckets split by the
    sign of the distance; causal ones only count keys behind the query.

    Args:
        num_heads: heads of the attention the bias is for.
        num_buckets: number of buckets (T5: 32).
        max_distance: distance where the logarithmic buckets end (T5: 128).
        bidirectional: encoder (True) or decoder (False) buckets.

    Call args (keywords):
        query_length, key_length: sizes of the logits.
        query_offset: absolute position of the first query (incremental decoding).

    Returns:
        bias of shape [1, num_heads, query_length, key_length].

    Example:
    >>> RelativePositionBias(num_heads=2)(query_length=4, key_length=4).shape
    (1, 2, 4, 4)
    """

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True,
                 initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("num_buckets", num_buckets)
        check_positive_int("max_distance", max_distance)
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.initializer = keras.initializers.get(initializer)

    def build(self, *args, **kwargs):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=self.initializer,
        )
        self.built = True

    def bucket(self, relative_position):
        """Bucket index of each key-minus-query distance (T5's `_relative_position_bucket`)."""
        num_buckets = self.num_buckets
        buckets = ops.zeros_like(relative_position)
        if self.bidirectional:
            num_buckets //= 2
            buckets = buckets + ops.cast(relative_position > 0, "int32") * num_buckets
            distance = ops.abs(relative_position)
        else:
            distance = -ops.minimum(relative_position, 0)
        max_exact = num_buckets // 2
        is_small = distance < max_exact
        # Guard the log against zero; those entries take the exact branch anyway.
        safe = ops.maximum(ops.cast(distance, "float32"), 1.0)
        large = max_exact + ops.cast(
            ops.log(safe / max_exact)
            / math.log(self.max_distance / max_exact)
            * (num_buckets - max_exact),
            "int32",
        )
        large = ops.minimum(large, num_buckets - 1)
        return buckets + ops.where(is_small, distance, large)

    def call(self, *, query_length, key_length, query_offset=0):
        query_pos = ops.arange(query_length)[:, None] + query_offset
        key_pos = ops.arange(key_length)[None, :]
        buckets = self.bucket(ops.cast(key_pos - query_pos, "int32"))
        values = ops.take(self.embeddings, buckets, axis=0)  # [q, k, heads]
        return ops.expand_dims(ops.transpose(values, (2, 0, 1)), 0)

    def compute_output_spec(self, *, query_length, key_length, query_offset=0):
        return keras.KerasTensor((1, self.num_heads, query_length, key_length),
                                 dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
