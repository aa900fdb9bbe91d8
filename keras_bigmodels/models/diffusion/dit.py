"""DiT (Peebles & Xie 2023): a transformer denoiser over image (or latent) patches, with
adaLN-zero conditioning on the timestep and the class.

Same call signature as the UNets, channels_last:

    dit([noisy_images, timesteps])                # num_classes=None
    dit([noisy_images, timesteps, class_labels])  # num_classes=K
"""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.layers.attention import MultiHeadAttention
from keras_bigmodels.layers.feedforward import FeedForward
from keras_bigmodels.layers.unet import TimestepEmbedding, Timesteps
from keras_bigmodels.models.base import SubclassedBackbone
from keras_bigmodels.utils import check_positive_int, check_transformer_dims


def sincos_position_table(grid_height, grid_width, dim):
    """DiT's (and MAE's) fixed 2-D sine-cosine position embedding, [h * w, dim] float32:
    half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"`hidden_dim` ({dim}) must be divisible by 4 for the 2-D sine-cosine "
                         "position embedding.")

    def one_axis(positions, width):
        omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
        angles = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, columns = np.meshgrid(np.arange(grid_height, dtype=np.float64),
                                np.arange(grid_width, dtype=np.float64), indexing="ij")
    table = np.concatenate([one_axis(columns, dim // 2), one_axis(rows, dim // 2)], axis=1)
    return table.astype(np.float32)


def _modulate(x, shift, scale):
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class DiTBlock(keras.layers.Layer):
    """A transformer block whose norms are modulated by the conditioning vector (adaLN-zero):
    shift, scale and a residual gate per sub-layer come from one zero-initialized dense
    layer, so every block starts as the identity.

    Args:
        hidden_dim, num_heads, intermediate_dim: the block's sizes.
        dropout: on the attention probabilities.

    Example:
    >>> block = DiTBlock(32, 4, 128)
    >>> block(keras.ops.zeros((2, 16, 32)), keras.ops.zeros((2, 32))).shape
    (2, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, intermediate_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_transformer_dims(hidden_dim=hidden_dim, num_heads=num_heads,
                               intermediate_dim=intermediate_dim)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        dtype = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, center=False, scale=False, name="attention_norm", dtype=dtype)
        self.attention = MultiHeadAttention(num_heads, hidden_dim // num_heads, dropout=dropout,
                                            name="attention", dtype=dtype)
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, center=False, scale=False, name="feedforward_norm", dtype=dtype)
        self.feedforward = FeedForward(intermediate_dim, activation="gelu_approximate",
                                       name="feedforward", dtype=dtype)
        self.modulation = keras.layers.Dense(6 * hidden_dim, kernel_initializer="zeros",
                                             name="modulation", dtype=dtype)

    def build(self, tokens_shape, condition_shape=None):
        tokens = tuple(tokens_shape)
        self.attention_norm.build(tokens)
        self.attention.build(tokens)
        self.feedforward_norm.build(tokens)
        self.feedforward.build(tokens)
        self.modulation.build((tokens[0], self.hidden_dim))
        self.built = True

    def call(self, tokens, condition, training=None):
        (shift_attention, scale_attention, gate_attention, shift_feedforward,
         scale_feedforward, gate_feedforward) = ops.split(
            self.modulation(ops.silu(condition)), 6, axis=-1)
        hidden = _modulate(self.attention_norm(tokens), shift_attention, scale_attention)
        tokens = tokens + gate_attention[:, None, :] * self.attention(hidden, training=training)
        hidden = _modulate(self.feedforward_norm(tokens), shift_feedforward, scale_feedforward)
        return tokens + gate_feedforward[:, None, :] * self.feedforward(hidden,
                                                                        training=training)

    def compute_output_shape(self, tokens_shape, condition_shape=None):
        return tuple(tokens_shape)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                      intermediate_dim=self.intermediate_dim, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class DiT(SubclassedBackbone):
    """Diffusion transformer: patchify, `num_layers` adaLN-zero blocks, unpatchify.

    The conditioning vector is the timestep embedding plus, with `num_classes`, a class
    embedding (include the null class of classifier-free guidance in `num_classes`). The
    final layer is zero-initialized, so an untrained DiT predicts 0.

    Args:
        image_size: (height, width) or an int; divisible by `patch_size`.
        patch_size: side of the square patches.
        in_channels: channels of the images or latents (out: the same).
        hidden_dim, num_layers, num_heads: the transformer (DiT-S/2: 384, 12, 6).
        intermediate_dim: the feed-forward width (4 * hidden_dim when None).
        num_classes: embedded class ids; None: unconditional.
        frequency_dim: width of the sinusoidal timestep features.
        dropout: on the attention probabilities.

    Example:
    >>> dit = DiT(image_size=8, patch_size=2, in_channels=1, hidden_dim=32, num_layers=2,
    ...           num_heads=4, num_classes=11)
    >>> dit([keras.ops.zeros((2, 8, 8, 1)), keras.ops.array([1, 500]),
    ...      keras.ops.array([3, 10])]).shape
    (2, 8, 8, 1)
    """

    family = "diffusion"
    config_keys = ("image_size", "patch_size", "in_channels", "hidden_dim", "num_layers",
                   "num_heads", "intermediate_dim", "num_classes", "frequency_dim", "dropout")

    def __init__(self, image_size=32, patch_size=2, in_channels=4, hidden_dim=384,
                 num_layers=12, num_heads=6, intermediate_dim=None, num_classes=None,
                 frequency_dim=256, dropout=0.0, name="dit", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) \
            else tuple(image_size)
        if len(size) != 2:
            raise ValueError(f"`image_size` must be an int or (height, width); received "
                             f"{image_size!r}.")
        for value in size:
            check_positive_int("image_size", value)
        check_positive_int("patch_size", patch_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"`image_size` {size} must be divisible by `patch_size` "
                             f"({patch_size}).")
        check_positive_int("in_channels", in_channels)
        intermediate_dim = intermediate_dim or 4 * hidden_dim
        check_transformer_dims(hidden_dim=hidden_dim, num_heads=num_heads,
                               num_layers=num_layers, intermediate_dim=intermediate_dim,
                               frequency_dim=frequency_dim)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self.image_size = tuple(int(v) for v in size)
        self.patch_size = int(patch_size)
        self.in_channels = self.out_channels = int(in_channels)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_classes = num_classes
        self.frequency_dim = frequency_dim
        self.dropout = dropout
        self.downsampling_factor = self.patch_size
        self.grid = (size[0] // patch_size, size[1] // patch_size)
        dtype = self.dtype_policy

        self.patch_embedding = keras.layers.Conv2D(hidden_dim, patch_size, strides=patch_size,
                                                   name="patch_embedding", dtype=dtype)
        self.position_table = sincos_position_table(*self.grid, hidden_dim)
        self.time_proj = Timesteps(frequency_dim, flip_sin_to_cos=True, name="time_proj",
                                   dtype=dtype)
        self.time_embedding = TimestepEmbedding(hidden_dim, name="time_embedding", dtype=dtype)
        self.class_embedding = (keras.layers.Embedding(
            num_classes, hidden_dim, embeddings_initializer=keras.initializers.RandomNormal(
                stddev=0.02), name="class_embedding", dtype=dtype)
            if num_classes is not None else None)
        self.blocks = [DiTBlock(hidden_dim, num_heads, intermediate_dim, dropout=dropout,
                                name=f"block_{i}", dtype=dtype) for i in range(num_layers)]
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, center=False, scale=False, name="output_norm", dtype=dtype)
        self.output_modulation = keras.layers.Dense(2 * hidden_dim, kernel_initializer="zeros",
                                                    name="output_modulation", dtype=dtype)
        self.output_projection = keras.layers.Dense(
            patch_size * patch_size * in_channels, kernel_initializer="zeros",
            name="output_projection", dtype=dtype)
        inputs = [keras.KerasTensor((1,) + self.image_size + (in_channels,)),
                  keras.KerasTensor((1,), dtype="int32")]
        if num_classes is not None:
            inputs.append(keras.KerasTensor((1,), dtype="int32"))
        self.call(inputs)  # builds every sublayer on symbolic tensors
        self.built = True

    @property
    def input_names(self):
        return ("noisy_images", "timesteps", "class_labels")[:3 if self.num_classes else 2]

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != len(self.input_names):
            raise ValueError(f"`inputs` must be a list [{', '.join(self.input_names)}].")
        images, timesteps, *labels = inputs
        shape = tuple(images.shape)
        if len(shape) != 4 or tuple(shape[1:]) != self.image_size + (self.in_channels,):
            raise ValueError(f"`noisy_images` must be [batch, {self.image_size[0]}, "
                             f"{self.image_size[1]}, {self.in_channels}] (image_size, "
                             f"in_channels; channels_last); received shape {shape}.")
        batch = ops.shape(images)[0]
        tokens = self.patch_embedding(images)
        tokens = ops.reshape(tokens, (batch, self.grid[0] * self.grid[1], self.hidden_dim))
        tokens = tokens + ops.cast(self.position_table, tokens.dtype)[None]
        timesteps = ops.convert_to_tensor(timesteps)
        if len(timesteps.shape) == 0:
            timesteps = ops.broadcast_to(timesteps, (batch,))
        condition = self.time_embedding(self.time_proj(timesteps))
        if self.class_embedding is not None:
            condition = condition + self.class_embedding(labels[0])
        for block in self.blocks:
            tokens = block(tokens, condition, training=training)
        shift, scale = ops.split(self.output_modulation(ops.silu(condition)), 2, axis=-1)
        tokens = self.output_projection(_modulate(self.output_norm(tokens), shift, scale))
        # Unpatchify: [batch, gh * gw, p * p * c] -> [batch, gh * p, gw * p, c].
        p, (gh, gw) = self.patch_size, self.grid
        patches = ops.reshape(tokens, (batch, gh, gw, p, p, self.in_channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        return ops.reshape(patches, (batch, gh * p, gw * p, self.in_channels))

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(tuple(inputs[0].shape), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["image_size"] = list(self.image_size)
        return config
