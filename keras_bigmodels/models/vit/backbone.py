"""Vision Transformer backbone: patches, [CLS] token, learned positions, pre-norm encoder."""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.layers.embeddings import PatchEmbedding
from keras_bigmodels.layers.positions import PositionEmbedding
from keras_bigmodels.layers.transformer import TransformerEncoderBlock
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.utils import check_in, check_pair, check_positive_int


def _bicubic_matrix(in_size, out_size, a=-0.75):
    """[out, in] weights of torch's bicubic resize (align_corners=False, edge clamped)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        base = int(np.floor(src))
        t = src - base
        for offset, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[i, min(max(base + offset, 0), in_size - 1)] += weight
    return matrix


def interpolate_position_embeddings(table, old_grid, new_grid):
    """Resize a [1 + h*w, dim] ViT position table to a new patch grid, bicubically.

    The [CLS] row is kept; the patch rows are resized as an image exactly like HF's
    `interpolate_pos_encoding` (torch bicubic, a = -0.75). The resize is a fixed linear
    map, applied with two einsums, so it is identical on every backend
    (`keras.ops.image.resize` uses a = -0.5 on JAX/TensorFlow and would not match HF).

    Example:
    >>> interpolate_position_embeddings(keras.ops.zeros((17, 8)), (4, 4), (6, 6)).shape
    (37, 8)
    """
    table = ops.convert_to_tensor(table)
    dim = table.shape[-1]
    rows = ops.convert_to_tensor(_bicubic_matrix(old_grid[0], new_grid[0]), table.dtype)
    cols = ops.convert_to_tensor(_bicubic_matrix(old_grid[1], new_grid[1]), table.dtype)
    grid = ops.reshape(table[1:], (old_grid[0], old_grid[1], dim))
    grid = ops.einsum("ih,jw,hwd->ijd", rows, cols, grid)
    return ops.concatenate([table[:1], ops.reshape(grid, (-1, dim))], axis=0)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ViTEmbedding(keras.layers.Layer):
    """Patch projection, a learned [CLS] token in front, plus learned positions.

    `use_bias=False` drops the projection's bias (CLIP). Sub-layers `patch_embedding` and
    `position_embedding`; variable `cls_token`.

    Example:
    >>> ViTEmbedding(patch_size=4, hidden_dim=16, num_patches=4)(keras.ops.zeros((2, 8, 8, 3))).shape
    (2, 5, 16)
    """

    def __init__(self, patch_size, hidden_dim, num_patches, dropout=0.0, use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_patches = num_patches
        self.dropout = dropout
        # CLIP's patch projection has no bias (its pre-layernorm follows).
        self.use_bias = use_bias
        self.patch_embedding = PatchEmbedding(patch_size, hidden_dim, use_bias=use_bias,
                                              dtype=self.dtype_policy, name="patch_embedding")
        self.position_embedding = PositionEmbedding(
            num_patches + 1, initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy, name="position_embedding",
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, images_shape):
        self.patch_embedding.build(images_shape)
        self.cls_token = self.add_weight(
            name="cls_token", shape=(self.hidden_dim,),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.position_embedding.build((None, self.num_patches + 1, self.hidden_dim))
        self.built = True

    def call(self, images, training=None):
        patches = self.patch_embedding(images)
        if patches.shape[1] is not None and patches.shape[1] != self.num_patches:
            raise ValueError(
                f"The images give {patches.shape[1]} patches but the model has positions for "
                f"{self.num_patches}; build the backbone for this image size (or use "
                "`backbone.with_image_size(...)` to interpolate the positions)."
            )
        cls = ops.cast(self.cls_token, patches.dtype)
        cls = ops.broadcast_to(cls[None, None, :], (ops.shape(patches)[0], 1, self.hidden_dim))
        x = ops.concatenate([cls, patches], axis=1)
        x = x + self.position_embedding(x)[None]
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, images_shape):
        return (images_shape[0], self.num_patches + 1, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, hidden_dim=self.hidden_dim,
                      num_patches=self.num_patches, dropout=self.dropout,
                      use_bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ViTBackbone(Backbone):
    """Vision Transformer (ViT) backbone: images [batch, H, W, C] -> tokens and a pooled vector.

    Outputs a dict: `sequence_output` [batch, 1 + num_patches, hidden_dim] (after the final
    LayerNorm, [CLS] first) and `pooled_output` [batch, hidden_dim] ([CLS] token, or the mean
    of the patch tokens with `pooling="mean"`; through HF's tanh `pooler` when `use_pooler`).

    Args:
        image_size: int or (height, width) the position table is built for.
        patch_size: int or (height, width) of a patch.
        num_layers, num_heads, hidden_dim, intermediate_dim: encoder size.
        num_channels: image channels.
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: 1e-6 in the paper's code, 1e-12 in HF checkpoints.
        activation: feed-forward activation ("gelu" is exact erf GELU).
        pooling: "cls" or "mean".
        use_pooler: add HF ViTModel's Dense+tanh `pooler` on the pooled vector.
        use_fused_attention: use `keras.ops.dot_product_attention` when possible.
        dtype: dtype policy of the layers.

    Example:
    >>> backbone = ViTBackbone(image_size=32, patch_size=8, num_layers=2, num_heads=2,
    ...                        hidden_dim=32, intermediate_dim=64)
    >>> backbone(np.zeros((1, 32, 32, 3)))["pooled_output"].shape
    (1, 32)
    """

    family = "vit"
    config_keys = (
        "image_size", "patch_size", "num_layers", "num_heads", "hidden_dim",
        "intermediate_dim", "num_channels", "dropout", "attention_dropout",
        "layer_norm_epsilon", "activation", "pooling", "use_pooler", "use_fused_attention",
    )
    huggingface_mapping = "keras_bigmodels.models.vit.huggingface"

    def __init__(self, image_size=224, patch_size=16, num_layers=12, num_heads=12,
                 hidden_dim=768, intermediate_dim=3072, num_channels=3, dropout=0.0,
                 attention_dropout=0.0, layer_norm_epsilon=1e-6, activation="gelu",
                 pooling="cls", use_pooler=False, use_fused_attention=None, dtype=None,
                 **kwargs):
        image = check_pair(image_size, "image_size")
        patch = check_pair(patch_size, "patch_size")
        for size, p, axis in zip(image, patch, ("height", "width")):
            if size % p:
                raise ValueError(
                    f"`image_size` {axis} {size} is not divisible by `patch_size` {p}."
                )
        for name, value in (("num_layers", num_layers), ("num_heads", num_heads),
                            ("hidden_dim", hidden_dim), ("intermediate_dim", intermediate_dim),
                            ("num_channels", num_channels)):
            check_positive_int(name, value)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        check_in("pooling", pooling, ("cls", "mean"))
        grid = (image[0] // patch[0], image[1] // patch[1])

        images = keras.Input((image[0], image[1], num_channels), name="images")
        x = ViTEmbedding(patch, hidden_dim, grid[0] * grid[1], dropout=dropout, dtype=dtype,
                         name="embedding")(images)
        for i in range(num_layers):
            x = TransformerEncoderBlock(
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                activation=activation,
                dropout=dropout,
                attention_dropout=attention_dropout,
                normalize_first=True,
                layer_norm_epsilon=layer_norm_epsilon,
                use_fused_attention=use_fused_attention,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )(x)
        x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                            name="final_norm")(x)
        pooled = x[:, 0] if pooling == "cls" else ops.mean(x[:, 1:], axis=1)
        if use_pooler:
            pooled = keras.layers.Dense(hidden_dim, activation="tanh", dtype=dtype,
                                        name="pooler")(pooled)
        super().__init__(inputs=images,
                         outputs={"sequence_output": x, "pooled_output": pooled}, **kwargs)

        self.image_size = image
        self.patch_size = patch
        self.grid_size = grid
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_channels = num_channels
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.pooling = pooling
        self.use_pooler = use_pooler
        self.use_fused_attention = use_fused_attention

    def with_image_size(self, image_size):
        """A copy of this backbone for another resolution, positions interpolated bicubically.

        Use it to fine-tune or evaluate at a new resolution (as HF's
        `interpolate_pos_encoding=True`, but done once on the weights).

        Example:
        >>> backbone_384 = ViTBackbone.from_preset("vit-base-patch16-224").with_image_size(384)
        """
        config = self.get_config()
        config["image_size"] = list(check_pair(image_size, "image_size"))
        new = self.__class__.from_config(config)
        old_embedding = self.get_layer("embedding")
        new_embedding = new.get_layer("embedding")
        table = old_embedding.position_embedding.embeddings
        resized = keras.ops.convert_to_numpy(
            interpolate_position_embeddings(table, self.grid_size, new.grid_size)
        )
        for old_var, new_var in zip(self.weights, new.weights):
            if new_var is new_embedding.position_embedding.embeddings:
                new_var.assign(resized)
            else:
                new_var.assign(old_var)
        return new

    def attention_scores(self, images):
        """Per layer [batch, heads, 1 + num_patches, 1 + num_patches] attention probabilities.

        Runs the layers eagerly (for inspection and plots, not training).

        Example:
        >>> maps = backbone.attention_scores(images)  # maps[-1][:, :, 0, 1:] is CLS->patches
        """
        x = self.get_layer("embedding")(ops.convert_to_tensor(images, self.compute_dtype))
        scores = []
        for i in range(self.num_layers):
            x, s = self.get_layer(f"transformer_layer_{i}")(x, return_attention_scores=True)
            scores.append(s)
        return scores
