"""Shared building blocks, each a `keras.layers.Layer` written with `keras.ops` only."""

from keras_bigmodels.layers.attention import MultiHeadAttention, causal_mask, merge_masks
from keras_bigmodels.layers.embeddings import (
    PatchEmbedding,
    TokenEmbedding,
    TransformerEmbedding,
)
from keras_bigmodels.layers.feedforward import FeedForward, get_activation
from keras_bigmodels.layers.positions import (
    PositionEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
    sinusoidal_table,
)
from keras_bigmodels.layers.transformer import (
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    make_norm,
)
from keras_bigmodels.layers.unet import (
    AttentionBlock2D,
    Downsample2D,
    ProjectedAttention,
    ResnetBlock2D,
    SpatialTransformer,
    TimestepEmbedding,
    Timesteps,
    TransformerBlock2D,
    UNetDownBlock,
    UNetMidBlock,
    UNetUpBlock,
    Upsample2D,
    timestep_embedding,
)
