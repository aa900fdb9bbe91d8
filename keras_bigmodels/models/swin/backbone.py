"""Swin Transformer backbone: shifted-window attention stages with patch merging."""

import keras
from keras import ops

from keras_bigmodels.layers.embeddings import PatchEmbedding
from keras_bigmodels.layers.windows import PatchMerging, SwinTransformerBlock
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.utils import check_pair, check_positive_int


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SwinBackbone(Backbone):
    """Swin Transformer backbone: images [batch, H, W, C] -> hierarchical feature maps.

    Outputs a dict: `stage_0` ... `stage_{n-1}` feature maps [batch, h_s, w_s, C * 2**s]
    (each stage's output before patch merging), `sequence_output` [batch, h*w, C_last]
    (last stage after the final LayerNorm, as HF's `last_hidden_state`) and
    `pooled_output` [batch, C_last] (its mean, HF's `pooler_output`).

    Args:
        image_size: int or (height, width); each stage's resolution must be a multiple of
            `window_size` (a stage no larger than the window uses one unshifted window).
        patch_size: side of the patches of the first stage (4).
        hidden_dim: width C of the first stage; doubles at every merging.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side (7).
        mlp_ratio: feed-forward width over the stage width.
        num_channels: image channels.
        dropout, attention_dropout: residual and attention-probability dropout.
        layer_norm_epsilon: epsilon of the block and final norms.
        activation: feed-forward activation.
        dtype: dtype policy of the layers.

    Example:
    >>> backbone = SwinBackbone(image_size=32, patch_size=2, hidden_dim=16, depths=[2, 2],
    ...                         num_heads=[2, 4], window_size=4)
    >>> [backbone(np.zeros((1, 32, 32, 3)))[k].shape for k in ("stage_0", "stage_1")]
    [(1, 16, 16, 16), (1, 8, 8, 32)]
    """

    family = "swin"
    config_keys = (
        "image_size", "patch_size", "hidden_dim", "depths", "num_heads", "window_size",
        "mlp_ratio", "num_channels", "dropout", "attention_dropout", "layer_norm_epsilon",
        "activation", "use_fused_attention",
    )
    huggingface_mapping = "keras_bigmodels.models.swin.huggingface"

    def __init__(self, image_size=224, patch_size=4, hidden_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, num_channels=3,
                 dropout=0.0, attention_dropout=0.0, layer_norm_epsilon=1e-5,
                 activation="gelu", use_fused_attention=None, dtype=None, **kwargs):
        image = check_pair(image_size, "image_size")
        patch = check_pair(patch_size, "patch_size")
        depths, num_heads = list(depths), list(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(
                f"`depths` and `num_heads` must be non-empty lists of the same length (one "
                f"entry per stage); received {depths} and {num_heads}."
            )
        for name, values in (("depths", depths), ("num_heads", num_heads)):
            for v in values:
                check_positive_int(name, v)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("window_size", window_size)
        for s, heads in enumerate(num_heads):
            if (hidden_dim * 2**s) % heads:
                raise ValueError(
                    f"Stage {s} width {hidden_dim * 2**s} is not divisible by its "
                    f"`num_heads` {heads}."
                )
        for size, p, axis in zip(image, patch, ("height", "width")):
            if size % p:
                raise ValueError(f"`image_size` {axis} {size} is not divisible by "
                                 f"`patch_size` {p}.")

        images = keras.Input((image[0], image[1], num_channels), name="images")
        x = PatchEmbedding(patch, hidden_dim, flatten=False, dtype=dtype,
                           name="patch_embedding")(images)
        # The reference's patch norm uses torch's default epsilon, not layer_norm_eps.
        x = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype,
                                            name="embedding_norm")(x)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="embedding_dropout")(x)
        outputs = {}
        dim = hidden_dim
        for s, (depth, heads) in enumerate(zip(depths, num_heads)):
            for b in range(depth):
                x = SwinTransformerBlock(
                    num_heads=heads,
                    intermediate_dim=int(mlp_ratio * dim),
                    window_size=window_size,
                    shift_size=0 if b % 2 == 0 else window_size // 2,
                    layer_norm_epsilon=layer_norm_epsilon,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    activation=activation,
                    use_fused_attention=use_fused_attention,
                    dtype=dtype,
                    name=f"stage_{s}_block_{b}",
                )(x)
            outputs[f"stage_{s}"] = x
            if s < len(depths) - 1:
                x = PatchMerging(dtype=dtype, name=f"stage_{s}_merging")(x)
                dim *= 2
        x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                            name="final_norm")(x)
        sequence = ops.reshape(x, (-1, x.shape[1] * x.shape[2], dim))
        outputs["sequence_output"] = sequence
        outputs["pooled_output"] = ops.mean(sequence, axis=1)
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        self.image_size = image
        self.patch_size = patch
        self.hidden_dim = hidden_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.num_channels = num_channels
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.use_fused_attention = use_fused_attention
        self.output_dim = dim
