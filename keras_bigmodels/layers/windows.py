"""Shifted-window attention (Swin) and patch merging on channels-last feature maps."""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.layers.transformer import TransformerEncoderBlock
from keras_bigmodels.utils import check_positive_int

# Swin's additive logit for token pairs from different regions of a cyclically shifted
# window (HF and the reference implementation use -100, not -inf).
SHIFT_MASK_VALUE = -100.0


def window_partition(x, window_size):
    """[b, H, W, C] -> [b * num_windows, window_size**2, C], windows in row-major order."""
    _, height, width, channels = x.shape
    x = ops.reshape(
        x, (-1, height // window_size, window_size, width // window_size, window_size, channels)
    )
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, window_size * window_size, channels))


def window_reverse(windows, window_size, height, width):
    """Inverse of `window_partition`: -> [b, height, width, C]."""
    channels = windows.shape[-1]
    x = ops.reshape(
        windows,
        (-1, height // window_size, width // window_size, window_size, window_size, channels),
    )
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def relative_position_index(window_size):
    """[w*w, w*w] ints into the (2w-1)^2 relative position table (Swin, eq. 4)."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size),
                                  indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    return (relative[..., 0] * (2 * window_size - 1) + relative[..., 1]).astype("int32")


def shifted_window_mask(height, width, window_size, shift_size):
    """[num_windows, w*w, w*w] additive mask: 0 within a region, -100 across regions.

    After the cyclic shift a window can hold pixels that were far apart in the image;
    they must not attend to each other.
    """
    regions = np.zeros((height, width), np.float32)
    bounds = lambda n: (slice(0, n - window_size), slice(n - window_size, n - shift_size),
                        slice(n - shift_size, n))
    label = 0
    for rows in bounds(height):
        for cols in bounds(width):
            regions[rows, cols] = label
            label += 1
    windows = regions.reshape(height // window_size, window_size, width // window_size,
                              window_size).transpose(0, 2, 1, 3).reshape(-1, window_size ** 2)
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, SHIFT_MASK_VALUE, 0.0).astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SwinTransformerBlock(keras.layers.Layer):
    """A (shifted-)window attention block on a [batch, H, W, C] feature map.

    The map is cyclically shifted, cut into windows, run through a pre-norm
    `TransformerEncoderBlock` whose attention gets the relative position bias (and the
    shift mask) as an additive bias, then put back. Norms and the feed-forward act per
    token, so running them on windowed tokens is exactly Swin's block.

    Args:
        num_heads: attention heads.
        intermediate_dim: feed-forward width (mlp_ratio * C).
        window_size: side of the square attention window.
        shift_size: cyclic shift (window_size // 2 in every second block, else 0). Both
            are clamped like the reference when the map is no larger than the window.
        layer_norm_epsilon, dropout, attention_dropout, activation: as in the encoder block.

    Example:
    >>> block = SwinTransformerBlock(num_heads=2, intermediate_dim=64, window_size=4,
    ...                              shift_size=2)
    >>> block(keras.ops.zeros((1, 8, 8, 16))).shape
    (1, 8, 8, 16)
    """

    def __init__(self, num_heads, intermediate_dim, window_size=7, shift_size=0,
                 layer_norm_epsilon=1e-5, dropout=0.0, attention_dropout=0.0,
                 activation="gelu", use_fused_attention=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("window_size", window_size)
        if not 0 <= shift_size < window_size:
            raise ValueError(
                f"`shift_size` must be in [0, window_size={window_size}); received {shift_size}."
            )
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.use_fused_attention = use_fused_attention

    def build(self, input_shape):
        _, height, width, channels = input_shape
        window, shift = self.window_size, self.shift_size
        if min(height, width) <= window:
            # The reference drops the shift (one window covers the map) in this case.
            window, shift = min(height, width), 0
        if window != self.window_size or height % window or width % window:
            raise ValueError(
                f"A {height}x{width} feature map cannot be cut into windows of "
                f"window_size={self.window_size}: each stage's resolution must be a multiple "
                "of window_size (and at least window_size). Change image_size or window_size."
            )
        self._window, self._shift = window, shift
        self._height, self._width = height, width
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=((2 * self.window_size - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self._index = relative_position_index(self.window_size).reshape(-1)
        self._mask = shifted_window_mask(height, width, window, shift) if shift else None
        self.encoder_block = TransformerEncoderBlock(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            normalize_first=True,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_fused_attention=self.use_fused_attention,
            dtype=self.dtype_policy,
            name="encoder_block",
        )
        self.encoder_block.build((None, window * window, channels))
        self.built = True

    def attention_bias(self, batch_size):
        """[batch * num_windows | 1, heads, w*w, w*w] relative bias (+ shift mask)."""
        tokens = self._window * self._window
        bias = ops.take(self.relative_position_bias_table, ops.convert_to_tensor(self._index),
                        axis=0)
        bias = ops.transpose(ops.reshape(bias, (tokens, tokens, self.num_heads)), (2, 0, 1))
        bias = bias[None]
        if self._mask is not None:
            mask = ops.convert_to_tensor(self._mask, dtype=bias.dtype)[:, None]
            bias = bias + ops.tile(mask, (batch_size, 1, 1, 1))
        return bias

    def _windows(self, x):
        if self._shift:
            x = ops.roll(ops.roll(x, -self._shift, axis=1), -self._shift, axis=2)
        return window_partition(x, self._window)

    def _unwindows(self, windows):
        x = window_reverse(windows, self._window, self._height, self._width)
        if self._shift:
            x = ops.roll(ops.roll(x, self._shift, axis=1), self._shift, axis=2)
        return x

    def call(self, inputs, return_attention_scores=False, training=None):
        bias = self.attention_bias(ops.shape(inputs)[0])
        out = self.encoder_block(
            self._windows(inputs), attention_bias=bias,
            return_attention_scores=return_attention_scores, training=training,
        )
        if return_attention_scores:
            out, scores = out
            return self._unwindows(out), scores
        return self._unwindows(out)

    def compute_output_spec(self, inputs, return_attention_scores=False, training=None):
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if return_attention_scores:
            tokens = self._window * self._window
            return out, keras.KerasTensor((None, self.num_heads, tokens, tokens),
                                          dtype=self.compute_dtype)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            window_size=self.window_size,
            shift_size=self.shift_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            use_fused_attention=self.use_fused_attention,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class PatchMerging(keras.layers.Layer):
    """Halve a [b, H, W, C] map's resolution and double its width (Swin's downsampling).

    Each 2x2 neighbourhood is concatenated in the reference's order (top-left,
    bottom-left, top-right, bottom-right), normalized (`norm`) and projected by the
    bias-free `reduction` to `2 C`.

    Example:
    >>> PatchMerging()(keras.ops.zeros((1, 8, 8, 16))).shape
    (1, 4, 4, 32)
    """

    def __init__(self, output_dim=None, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height % 2 or width % 2:
            raise ValueError(
                f"PatchMerging needs an even feature map; received {height}x{width}. Use an "
                "image_size that is patch_size * window_size * 2**(num_stages - 1) friendly."
            )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm")
        self.norm.build((None, None, None, 4 * channels))
        self.reduction = keras.layers.Dense(
            self.output_dim or 2 * channels, use_bias=False, dtype=self.dtype_policy,
            name="reduction")
        self.reduction.build((None, None, None, 4 * channels))
        self.built = True

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        x = ops.reshape(inputs, (-1, height // 2, 2, width // 2, 2, channels))
        # [b, h, w, col, row, C]: concatenation index col * 2 + row, the reference order.
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        x = ops.reshape(x, (-1, height // 2, width // 2, 4 * channels))
        return self.reduction(self.norm(x))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, h // 2, w // 2, self.output_dim or 2 * c)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, layer_norm_epsilon=self.layer_norm_epsilon)
        return config
