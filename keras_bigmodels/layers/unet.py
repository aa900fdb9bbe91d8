"""UNet building blocks (DDPM, Stable Diffusion, the SD autoencoder), channels_last images.

Every block takes images as [batch, height, width, channels] (NHWC) and follows the
numerics of the corresponding diffusers module, so that `models/diffusion/huggingface.py`
loads diffusers checkpoints with a name table only:

- `timestep_embedding` / `Timesteps` / `TimestepEmbedding`: diffusers' sinusoidal
  `get_timestep_embedding` and its two-layer MLP (a `FeedForward`);
- `ResnetBlock2D`: group norm, SiLU, 3x3 conv, plus a projection of the time embedding;
- `Downsample2D` / `Upsample2D`: strided 3x3 conv (or average pool) / nearest 2x + conv;
- `ProjectedAttention`: multi-head attention with diffusers' bias switches;
- `AttentionBlock2D`: spatial self-attention with a group norm and a residual (DDPM, VAE);
- `SpatialTransformer` (diffusers' `Transformer2DModel`) of `TransformerBlock2D`s
  (self-attention, cross-attention on text embeddings, GEGLU feed-forward as SD v1);
- `UNetDownBlock`, `UNetMidBlock`, `UNetUpBlock`: a resolution level of a UNet or of the
  VAE encoder/decoder, with or without attention and skip connections;
- `check_level_channels`, `down_blocks`, `up_blocks`: the levels of an encoder and of its
  mirrored decoder, built one way for `UNet2D`, `UNet2DCondition` and `AutoencoderKL`.

Speed (issue 17), explicit and tested in tests/layers/test_unet_kernels.py: convolutions and
group norms are `ImageConv2D` / `ImageGroupNormalization`, Keras' layers with the same
variables that run `backend.image_kernels()` where a backend has them (torch: its own
kernels on channels_last views, no transposes copied; JAX: convs whose kernel gradient
is computed as matmuls, XLA:CPU's own form being most of a training step);
`ProjectedAttention` is fused where that is faster; and blocks call their sublayers
through `backend.decoding.invoke`, so that torch's eager sampling loop (`eager_decoding()`)
skips Keras' per-layer `__call__` bookkeeping (everywhere else `invoke` is the plain call).

Variables are named for `distribution.RULES`: attention projections `query|key|value|output`
under a layer whose name ends in `attention`, feed-forward `intermediate|intermediate_gate|
output`; convolutions fall to the rule table's largest-divisible-dimension default.
"""

import math

import keras
from keras import ops

from keras_bigmodels import backend
from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.layers.attention import fused_by_default
from keras_bigmodels.layers.feedforward import FeedForward, get_activation
from keras_bigmodels.utils import check_in, check_positive_int

ATTENTION_KINDS = (None, "self", "cross")


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="keras_bigmodels")(cls)


def _check_groups(channels, groups, name="norm_num_groups"):
    if channels % groups:
        raise ValueError(f"`{name}` ({groups}) must divide the channels ({channels}) of every "
                         "group-normalized layer.")


@_serializable
class ImageConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (channels_last) that runs the backend's direct conv kernel.

    Same arguments, variables (`kernel`, `bias`) and outputs as `Conv2D`. Where
    `backend.image_kernels()` has a kernel (torch: the conv on an NCHW view in
    torch.channels_last memory, bias fused, no transpose copied) and the conv is a plain
    one (groups 1, no dilation, "valid" or stride-1 "same" padding with odd kernel sizes,
    channels_last, not quantized), `call` takes it (JAX: XLA's conv whose stride-1
    kernel gradient is computed as matmuls, see `jax_backend.ImageOps`); otherwise, and
    on TensorFlow, `Conv2D.call`. The kernel's equivalence test is in
    tests/layers/test_unet_kernels.py.

    Example:
    >>> ImageConv2D(8, 3, padding="same")(keras.ops.zeros((1, 4, 4, 3))).shape
    (1, 4, 4, 8)
    """

    def _direct_padding(self):
        """The symmetric per-axis padding of the direct kernel, or None (not a plain conv)."""
        if (self.groups != 1 or tuple(self.dilation_rate) != (1, 1)
                or self.data_format != "channels_last"
                or getattr(self, "quantization_mode", None)):
            return None
        if self.padding == "valid":
            return (0, 0)
        if (self.padding == "same" and tuple(self.strides) == (1, 1)
                and all(size % 2 for size in self.kernel_size)):
            return tuple(size // 2 for size in self.kernel_size)
        return None

    def call(self, inputs):
        kernels = backend.image_kernels()
        direct = kernels is not None and kernels.conv2d is not None
        padding = self._direct_padding() if direct else None
        if padding is None or len(inputs.shape) != 4:
            return super().call(inputs)
        bias = self.bias if self.use_bias else None
        outputs = kernels.conv2d(inputs, ops.convert_to_tensor(self.kernel),
                                 None if bias is None else ops.convert_to_tensor(bias),
                                 self.strides, padding)
        return outputs if self.activation is None else self.activation(outputs)


@_serializable
class ImageGroupNormalization(keras.layers.GroupNormalization):
    """`keras.layers.GroupNormalization` over the channels of NHWC images, run by the
    backend's direct group-norm kernel where it has one.

    Same arguments, variables (`gamma`, `beta`) and numerics (statistics in float32, output
    in the input's dtype) as `GroupNormalization`; on torch (`backend.image_kernels()`)
    rank-4 inputs normalized over the last axis take torch's fused group norm on an NCHW
    view, elsewhere `GroupNormalization.call`. Equivalence test in
    tests/layers/test_unet_kernels.py.

    Example:
    >>> ImageGroupNormalization(groups=4)(keras.ops.ones((1, 4, 4, 8))).shape
    (1, 4, 4, 8)
    """

    def call(self, inputs):
        kernels = backend.image_kernels()
        if (kernels is None or kernels.group_norm is None or len(inputs.shape) != 4
                or self.axis not in (-1, len(inputs.shape) - 1)):
            return super().call(inputs)
        gamma = ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = ops.convert_to_tensor(self.beta) if self.center else None
        outputs = kernels.group_norm(inputs, self.groups, gamma, beta, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


def _group_norm(groups, epsilon, name, dtype):
    return ImageGroupNormalization(groups=groups, epsilon=epsilon, axis=-1, name=name,
                                   dtype=dtype)


def _conv(filters, kernel_size, name, dtype, padding="same", use_bias=True, strides=1):
    # A 3x3 stride-1 conv with "same" padding pads one pixel on each side, as torch's
    # padding=1; strided convs pad explicitly (see Downsample2D).
    return ImageConv2D(filters, kernel_size, strides=strides, padding=padding,
                       use_bias=use_bias, name=name, dtype=dtype)


def _build(layer, *shapes):
    """Build `layer` from shapes and return its output shape: no call is traced, so that
    building a whole UNet (even SD's) takes milliseconds rather than a symbolic pass."""
    layer.build(*shapes)
    return layer.compute_output_shape(*shapes)


def timestep_embedding(timesteps, dim, flip_sin_to_cos=True, freq_shift=0.0, max_period=10000):
    """Sinusoidal embeddings of (possibly fractional) timesteps, as diffusers computes them.

    Frequencies are exp(-log(max_period) * i / (dim / 2 - freq_shift)) for i < dim / 2;
    the embedding is [sin, cos] ([cos, sin] when `flip_sin_to_cos`), zero-padded to an odd
    `dim`.

    Args:
        timesteps: [batch] ints or floats.
        dim: the embedding width.
        flip_sin_to_cos: cosines first (DDPM/SD checkpoints use True).
        freq_shift: diffusers' `downscale_freq_shift` (0 for UNet2DModel/SD, 1 in the
            original DDPM code).
        max_period: the longest period.

    Example:
    >>> timestep_embedding(keras.ops.array([0, 10, 999]), 32).shape
    (3, 32)
    """
    half = dim // 2
    exponent = -math.log(max_period) * ops.arange(half, dtype="float32") / (half - freq_shift)
    angles = ops.cast(ops.reshape(timesteps, (-1,)), "float32")[:, None] * ops.exp(exponent)[None]
    sin, cos = ops.sin(angles), ops.cos(angles)
    embedding = ops.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        embedding = ops.pad(embedding, [[0, 0], [0, 1]])
    return embedding


@_serializable
class Timesteps(keras.layers.Layer):
    """`timestep_embedding` as a weightless layer: [batch] timesteps -> [batch, dim].

    Args:
        dim: the embedding width.
        flip_sin_to_cos, freq_shift: as in `timestep_embedding`.

    Example:
    >>> Timesteps(16)(keras.ops.array([1, 2])).shape
    (2, 16)
    """

    def __init__(self, dim, flip_sin_to_cos=True, freq_shift=0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("dim", dim)
        self.dim = dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift

    def call(self, timesteps):
        embedding = timestep_embedding(timesteps, self.dim, self.flip_sin_to_cos, self.freq_shift)
        return ops.cast(embedding, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, flip_sin_to_cos=self.flip_sin_to_cos,
                      freq_shift=self.freq_shift)
        return config


@_serializable
class TimestepEmbedding(keras.layers.Layer):
    """The timestep MLP: Dense(dim) -> SiLU -> Dense(dim) (diffusers' `TimestepEmbedding`).

    It is a `FeedForward` named `feedforward` (layers `intermediate` and `output`), so the
    rule table shards it as one.

    Args:
        dim: the width of the time embedding (4x the first UNet level's channels).
        activation: the activation between the two layers.

    Example:
    >>> TimestepEmbedding(64)(keras.ops.zeros((2, 16))).shape
    (2, 64)
    """

    def __init__(self, dim, activation="silu", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("dim", dim)
        self.dim = dim
        self.activation = activation
        self.feedforward = FeedForward(dim, activation=activation, output_dim=dim,
                                       name="feedforward", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.feedforward.build(input_shape)

    def call(self, inputs):
        return invoke(self.feedforward, inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, activation=self.activation)
        return config


@_serializable
class ResnetBlock2D(keras.layers.Layer):
    """Residual block: GN, SiLU, conv3x3 (+ time projection), GN, SiLU, dropout, conv3x3.

    Images are channels_last [batch, height, width, channels]. The shortcut is a 1x1 conv
    when the channels change. With `time_embedding_norm="scale_shift"` the projected time
    embedding scales and shifts the second norm's output instead of being added before it.

    Args:
        out_channels: output channels.
        groups: groups of the first group norm (its input channels must divide by them).
        groups_out: groups of the second norm; defaults to `groups`.
        epsilon: the group norms' epsilon.
        use_time_embedding: whether `call` takes a time embedding (False in the VAE).
        time_embedding_norm: "default" or "scale_shift".
        dropout: dropout before the second conv.
        output_scale_factor: the sum with the shortcut is divided by it.
        activation: the nonlinearity (diffusers' `act_fn`).

    Call args:
        inputs: [batch, height, width, in_channels].
        time_embedding: [batch, time_dim] or None.

    Example:
    >>> block = ResnetBlock2D(32, groups=8)
    >>> block(keras.ops.zeros((2, 8, 8, 16)), keras.ops.zeros((2, 64))).shape
    (2, 8, 8, 32)
    """

    def __init__(self, out_channels, groups=32, groups_out=None, epsilon=1e-6,
                 use_time_embedding=True, time_embedding_norm="default", dropout=0.0,
                 output_scale_factor=1.0, activation="silu", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("out_channels", out_channels)
        check_positive_int("groups", groups)
        check_in("time_embedding_norm", time_embedding_norm, ("default", "scale_shift"))
        self.out_channels = out_channels
        self.groups = groups
        self.groups_out = groups_out or groups
        self.epsilon = epsilon
        self.use_time_embedding = use_time_embedding
        self.time_embedding_norm = time_embedding_norm
        self.dropout = dropout
        self.output_scale_factor = output_scale_factor
        self.activation = activation
        self._activation_fn = get_activation(activation)
        dtype = self.dtype_policy
        self.norm1 = _group_norm(groups, epsilon, "norm1", dtype)
        self.conv1 = _conv(out_channels, 3, "conv1", dtype)
        if use_time_embedding:
            width = out_channels * (2 if time_embedding_norm == "scale_shift" else 1)
            self.time_projection = keras.layers.Dense(width, name="time_projection", dtype=dtype)
        self.norm2 = _group_norm(self.groups_out, epsilon, "norm2", dtype)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=dtype)
        self.conv2 = _conv(out_channels, 3, "conv2", dtype)
        self.shortcut = None

    def build(self, inputs_shape, time_embedding_shape=None):
        input_shape = inputs_shape
        in_channels = input_shape[-1]
        _check_groups(in_channels, self.groups, "groups")
        _check_groups(self.out_channels, self.groups_out, "groups_out")
        self.norm1.build(input_shape)
        self.conv1.build(input_shape)
        out_shape = tuple(input_shape[:-1]) + (self.out_channels,)
        if self.use_time_embedding:
            if time_embedding_shape is None:
                raise ValueError("`time_embedding` is required: this block was built with "
                                 "`use_time_embedding=True`.")
            self.time_projection.build(time_embedding_shape)
        self.norm2.build(out_shape)
        self.conv2.build(out_shape)
        if in_channels != self.out_channels:
            self.shortcut = _conv(self.out_channels, 1, "shortcut", self.dtype_policy,
                                  padding="valid")
            self.shortcut.build(input_shape)

    def call(self, inputs, time_embedding=None, training=None):
        hidden = invoke(self.conv1, self._activation_fn(invoke(self.norm1, inputs)))
        scale_shift = None
        if self.use_time_embedding:
            projected = invoke(self.time_projection,
                               self._activation_fn(time_embedding))[:, None, None, :]
            if self.time_embedding_norm == "default":
                hidden = hidden + projected
            else:
                scale_shift = ops.split(projected, 2, axis=-1)
        hidden = invoke(self.norm2, hidden)
        if scale_shift is not None:
            hidden = hidden * (1.0 + scale_shift[0]) + scale_shift[1]
        hidden = invoke(self.dropout_layer, self._activation_fn(hidden), training=training)
        hidden = invoke(self.conv2, hidden)
        shortcut = inputs if self.shortcut is None else invoke(self.shortcut, inputs)
        output = shortcut + hidden
        if self.output_scale_factor != 1.0:
            output = output / self.output_scale_factor
        return output

    def compute_output_shape(self, inputs_shape, time_embedding_shape=None):
        input_shape = inputs_shape
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, groups=self.groups,
                      groups_out=self.groups_out, epsilon=self.epsilon,
                      use_time_embedding=self.use_time_embedding,
                      time_embedding_norm=self.time_embedding_norm, dropout=self.dropout,
                      output_scale_factor=self.output_scale_factor, activation=self.activation)
        return config


@_serializable
class Downsample2D(keras.layers.Layer):
    """Halve height and width: a stride-2 3x3 conv (or a 2x2 average pool), channels_last.

    Args:
        out_channels: output channels of the conv (the input's when None).
        use_conv: False gives a 2x2 average pool (no weights).
        padding: 1 pads each side by one pixel (UNets); 0 pads only the bottom and right
            (the SD autoencoder), both as diffusers' `Downsample2D`.

    Example:
    >>> Downsample2D()(keras.ops.zeros((1, 8, 8, 4))).shape
    (1, 4, 4, 4)
    """

    def __init__(self, out_channels=None, use_conv=True, padding=1, **kwargs):
        super().__init__(**kwargs)
        check_in("padding", padding, (0, 1))
        self.out_channels = out_channels
        self.use_conv = use_conv
        self.padding = padding
        self.conv = None

    def build(self, input_shape):
        if self.use_conv:
            self.conv = _conv(self.out_channels or input_shape[-1], 3, "conv", self.dtype_policy,
                              padding="valid", strides=2)
            padded = (input_shape[0], None, None, input_shape[-1])
            self.conv.build(padded)

    def call(self, inputs):
        if not self.use_conv:
            return ops.average_pool(inputs, 2, strides=2, padding="valid")
        if self.padding == 1:
            inputs = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        else:
            inputs = ops.pad(inputs, [[0, 0], [0, 1], [0, 1], [0, 0]])
        return invoke(self.conv, inputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        half = lambda n: None if n is None else n // 2  # noqa: E731
        return (batch, half(height), half(width),
                (self.out_channels or channels) if self.use_conv else channels)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, use_conv=self.use_conv,
                      padding=self.padding)
        return config


@_serializable
class Upsample2D(keras.layers.Layer):
    """Double height and width: nearest-neighbour 2x, then a 3x3 conv (channels_last).

    Args:
        out_channels: output channels of the conv (the input's when None).
        use_conv: False only repeats pixels.

    Example:
    >>> Upsample2D()(keras.ops.zeros((1, 4, 4, 8))).shape
    (1, 8, 8, 8)
    """

    def __init__(self, out_channels=None, use_conv=True, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.use_conv = use_conv
        self.conv = None

    def build(self, input_shape):
        if self.use_conv:
            self.conv = _conv(self.out_channels or input_shape[-1], 3, "conv", self.dtype_policy)
            self.conv.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, inputs):
        hidden = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)
        return invoke(self.conv, hidden) if self.use_conv else hidden

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda n: None if n is None else 2 * n  # noqa: E731
        return (batch, double(height), double(width),
                (self.out_channels or channels) if self.use_conv else channels)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, use_conv=self.use_conv)
        return config


@_serializable
class ProjectedAttention(keras.layers.Layer):
    """Multi-head attention over sequences with diffusers' separate bias switches.

    Query/key/value kernels are [dim, heads, head_dim] and the output kernel [heads,
    head_dim, dim] (named `query`, `key`, `value`, `output`, as `MultiHeadAttention`), so
    the rule table shards them along heads. SD's transformer blocks have no query/key/value
    bias but an output bias; the DDPM/VAE attention has all four. In float32 attention is
    fused where that is the faster form: torch's SDPA on strided views
    (`backend.image_kernels().attention`), else `keras.ops.dot_product_attention` where
    `backend.prefers_fused_attention`; otherwise explicit einsums with a float32 softmax.

    Args:
        num_heads: number of heads.
        head_dim: size of each head.
        context_dim: width of the keys/values' source for cross-attention; None: self.
        qkv_bias: whether query/key/value have biases.
        output_bias: whether the output projection has one.
        dropout: dropout after the output projection (diffusers' `to_out[1]`).

    Call args:
        inputs: [batch, length, dim].
        context: [batch, context_length, context_dim] for cross-attention.

    Example:
    >>> ProjectedAttention(2, 8)(keras.ops.zeros((1, 5, 16))).shape
    (1, 5, 16)
    """

    def __init__(self, num_heads, head_dim, context_dim=None, qkv_bias=True, output_bias=True,
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("head_dim", head_dim)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.context_dim = context_dim
        self.qkv_bias = qkv_bias
        self.output_bias = output_bias
        self.dropout = dropout

    def _projection(self, name, equation, output_shape, bias_axes):
        return keras.layers.EinsumDense(equation, output_shape=output_shape,
                                        bias_axes=bias_axes, name=name, dtype=self.dtype_policy)

    def build(self, input_shape):
        dim = input_shape[-1]
        context_dim = self.context_dim or dim
        heads, head_dim = self.num_heads, self.head_dim
        qkv_bias = "nh" if self.qkv_bias else None
        self.query_dense = self._projection("query", "btd,dnh->btnh", (None, heads, head_dim),
                                            qkv_bias)
        self.key_dense = self._projection("key", "bsd,dnh->bsnh", (None, heads, head_dim),
                                          qkv_bias)
        self.value_dense = self._projection("value", "bsd,dnh->bsnh", (None, heads, head_dim),
                                            qkv_bias)
        self.output_dense = self._projection("output", "btnh,nhd->btd", (None, dim),
                                             "d" if self.output_bias else None)
        self.query_dense.build(input_shape)
        self.key_dense.build((input_shape[0], None, context_dim))
        self.value_dense.build((input_shape[0], None, context_dim))
        self.output_dense.build((input_shape[0], input_shape[1], heads, head_dim))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, context=None, training=None):
        if self.context_dim is not None and context is None:
            raise ValueError("`context` (the encoder hidden states) is required for "
                             "cross-attention.")
        context = inputs if context is None else context
        query = invoke(self.query_dense, inputs)
        key = invoke(self.key_dense, context)
        value = invoke(self.value_dense, context)
        scale = 1.0 / math.sqrt(self.head_dim)
        # Fused attention equals the explicit path in float32; half precision keeps the
        # explicit float32 softmax below.
        float32 = keras.backend.standardize_dtype(query.dtype) == "float32"
        kernels = backend.image_kernels() if float32 else None
        if kernels is not None and kernels.attention is not None:
            attended = kernels.attention(query, key, value, scale)
        elif float32 and fused_by_default():
            attended = ops.dot_product_attention(query, key, value, scale=scale)
        else:
            # Explicit: on JAX as batched matmuls on heads-first transposes [b, n, t, h]
            # (backend.prefers_heads_first_attention), elsewhere as einsums.
            heads_first = backend.prefers_heads_first_attention()
            if heads_first:
                scores = ops.matmul(
                    ops.transpose(query * ops.cast(scale, query.dtype), (0, 2, 1, 3)),
                    ops.transpose(key, (0, 2, 3, 1)))
            else:
                scores = ops.einsum("btnh,bsnh->bnts", query, key) * scale
            # Softmax in float32 (diffusers' upcast_softmax) so half-precision policies agree.
            probabilities = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1),
                                     query.dtype)
            if heads_first:
                attended = ops.transpose(
                    ops.matmul(probabilities, ops.transpose(value, (0, 2, 1, 3))), (0, 2, 1, 3))
            else:
                attended = ops.einsum("bnts,bsnh->btnh", probabilities, value)
        return invoke(self.dropout_layer, invoke(self.output_dense, attended), training=training)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        input_shape = inputs_shape
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, head_dim=self.head_dim,
                      context_dim=self.context_dim, qkv_bias=self.qkv_bias,
                      output_bias=self.output_bias, dropout=self.dropout)
        return config


def _flatten_spatial(images):
    shape = ops.shape(images)
    return ops.reshape(images, (shape[0], shape[1] * shape[2], shape[3])), shape


@_serializable
class AttentionBlock2D(keras.layers.Layer):
    """Spatial self-attention: GN -> attention over height*width positions -> + input.

    diffusers' `Attention` with `norm_num_groups` and `residual_connection=True`, as in
    UNet2DModel's attention levels and the autoencoder's middle block. channels_last.

    Args:
        num_heads: heads; each has channels // num_heads dims.
        groups: group-norm groups (None: no norm).
        epsilon: group-norm epsilon.
        rescale_output_factor: the residual sum is divided by it.

    Example:
    >>> AttentionBlock2D(num_heads=2, groups=4)(keras.ops.zeros((1, 4, 4, 16))).shape
    (1, 4, 4, 16)
    """

    def __init__(self, num_heads=1, groups=32, epsilon=1e-6, rescale_output_factor=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        self.num_heads = num_heads
        self.groups = groups
        self.epsilon = epsilon
        self.rescale_output_factor = rescale_output_factor
        self.group_norm = (None if groups is None
                           else _group_norm(groups, epsilon, "group_norm", self.dtype_policy))

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"`num_heads` ({self.num_heads}) must divide the channels "
                             f"({channels}) of an attention block.")
        if self.group_norm is not None:
            _check_groups(channels, self.groups, "groups")
            self.group_norm.build(input_shape)
        self.attention = ProjectedAttention(self.num_heads, channels // self.num_heads,
                                            name="attention", dtype=self.dtype_policy)
        self.attention.build((input_shape[0], None, channels))

    def call(self, inputs, training=None):
        hidden = inputs if self.group_norm is None else invoke(self.group_norm, inputs)
        sequence, shape = _flatten_spatial(hidden)
        attended = ops.reshape(invoke(self.attention, sequence, training=training), shape)
        output = attended + inputs
        if self.rescale_output_factor != 1.0:
            output = output / self.rescale_output_factor
        return output

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, groups=self.groups, epsilon=self.epsilon,
                      rescale_output_factor=self.rescale_output_factor)
        return config


@_serializable
class TransformerBlock2D(keras.layers.Layer):
    """SD v1's transformer block: pre-LN self-attention, cross-attention, GEGLU feed-forward.

    diffusers' `BasicTransformerBlock` (layer norms, no query/key/value bias, an output
    bias, a GEGLU feed-forward 4x wide with exact GELU). Operates on [batch, length, dim].

    Args:
        num_heads, head_dim: attention heads and their size.
        cross_attention_dim: width of the text embeddings; None: no cross-attention.
        epsilon: layer-norm epsilon.
        dropout: dropout of attention outputs and inside the feed-forward.

    Call args:
        inputs: [batch, length, dim]; context: [batch, text_length, cross_attention_dim].

    Example:
    >>> block = TransformerBlock2D(2, 8, cross_attention_dim=12)
    >>> block(keras.ops.zeros((1, 9, 16)), keras.ops.zeros((1, 3, 12))).shape
    (1, 9, 16)
    """

    def __init__(self, num_heads, head_dim, cross_attention_dim=None, epsilon=1e-5,
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.cross_attention_dim = cross_attention_dim
        self.epsilon = epsilon
        self.dropout = dropout
        dtype = self.dtype_policy
        norm = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=epsilon, name=name, dtype=dtype)
        self.norm1 = norm("norm1")
        self.self_attention = ProjectedAttention(num_heads, head_dim, qkv_bias=False,
                                                 dropout=dropout, name="self_attention",
                                                 dtype=dtype)
        self.norm2 = self.cross_attention = None
        if cross_attention_dim is not None:
            self.norm2 = norm("norm2")
            self.cross_attention = ProjectedAttention(
                num_heads, head_dim, context_dim=cross_attention_dim, qkv_bias=False,
                dropout=dropout, name="cross_attention", dtype=dtype)
        self.norm3 = norm("norm3")

    def build(self, inputs_shape, context_shape=None):
        input_shape = inputs_shape
        dim = input_shape[-1]
        self.norm1.build(input_shape)
        self.self_attention.build(input_shape)
        if self.cross_attention is not None:
            self.norm2.build(input_shape)
            self.cross_attention.build(input_shape)
        self.norm3.build(input_shape)
        self.feedforward = FeedForward(4 * dim, activation="gelu", gated=True,
                                       dropout=self.dropout, name="feedforward",
                                       dtype=self.dtype_policy)
        self.feedforward.build(input_shape)

    def call(self, inputs, context=None, training=None):
        hidden = inputs + invoke(self.self_attention, invoke(self.norm1, inputs),
                                 training=training)
        if self.cross_attention is not None:
            hidden = hidden + invoke(self.cross_attention, invoke(self.norm2, hidden), context,
                                                   training=training)
        return hidden + invoke(self.feedforward, invoke(self.norm3, hidden), training=training)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        input_shape = inputs_shape
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, head_dim=self.head_dim,
                      cross_attention_dim=self.cross_attention_dim, epsilon=self.epsilon,
                      dropout=self.dropout)
        return config


@_serializable
class SpatialTransformer(keras.layers.Layer):
    """GN -> 1x1 conv in -> transformer blocks over height*width -> 1x1 conv out -> + input.

    diffusers' `Transformer2DModel` on continuous (image) inputs, as in SD's UNet;
    channels_last. `use_linear_projection` replaces the 1x1 convs by Dense layers (SD 2).

    Args:
        num_heads: attention heads; each has channels // num_heads dims.
        num_layers: transformer blocks.
        cross_attention_dim: width of the text embeddings; None: self-attention only.
        groups: group-norm groups (its epsilon is 1e-6, as diffusers').
        use_linear_projection: Dense instead of 1x1 conv projections.
        dropout: dropout inside the blocks.

    Call args:
        inputs: [batch, height, width, channels]; context: [batch, text_length,
        cross_attention_dim].

    Example:
    >>> layer = SpatialTransformer(2, cross_attention_dim=12, groups=4)
    >>> layer(keras.ops.zeros((1, 4, 4, 16)), keras.ops.zeros((1, 3, 12))).shape
    (1, 4, 4, 16)
    """

    def __init__(self, num_heads, num_layers=1, cross_attention_dim=None, groups=32,
                 use_linear_projection=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("num_layers", num_layers)
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.cross_attention_dim = cross_attention_dim
        self.groups = groups
        self.use_linear_projection = use_linear_projection
        self.dropout = dropout
        self.norm = _group_norm(groups, 1e-6, "norm", self.dtype_policy)

    def _projection(self, channels, name):
        if self.use_linear_projection:
            return keras.layers.Dense(channels, name=name, dtype=self.dtype_policy)
        return _conv(channels, 1, name, self.dtype_policy, padding="valid")

    def build(self, inputs_shape, context_shape=None):
        input_shape = inputs_shape
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"`num_heads` ({self.num_heads}) must divide the channels "
                             f"({channels}) of a spatial transformer.")
        _check_groups(channels, self.groups, "groups")
        self.norm.build(input_shape)
        self.projection_in = self._projection(channels, "projection_in")
        self.projection_in.build(input_shape)
        self.blocks = [
            TransformerBlock2D(self.num_heads, channels // self.num_heads,
                               self.cross_attention_dim, dropout=self.dropout,
                               name=f"transformer_block_{i}", dtype=self.dtype_policy)
            for i in range(self.num_layers)
        ]
        for block in self.blocks:
            block.build((input_shape[0], None, channels))
        self.projection_out = self._projection(channels, "projection_out")
        self.projection_out.build(input_shape)

    def call(self, inputs, context=None, training=None):
        hidden = invoke(self.projection_in, invoke(self.norm, inputs))
        sequence, shape = _flatten_spatial(hidden)
        for block in self.blocks:
            sequence = invoke(block, sequence, context, training=training)
        return invoke(self.projection_out, ops.reshape(sequence, shape)) + inputs

    def compute_output_shape(self, inputs_shape, context_shape=None):
        input_shape = inputs_shape
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, num_layers=self.num_layers,
                      cross_attention_dim=self.cross_attention_dim, groups=self.groups,
                      use_linear_projection=self.use_linear_projection, dropout=self.dropout)
        return config


class _LevelBlock(keras.layers.Layer):
    """Shared arguments of the three UNet level blocks (resnets interleaved with attention)."""

    def __init__(self, out_channels, num_layers=2, attention=None, num_heads=1, groups=32,
                 epsilon=1e-5, use_time_embedding=True, time_embedding_norm="default",
                 cross_attention_dim=None, transformer_layers=1, use_linear_projection=False,
                 attention_groups=None, output_scale_factor=1.0, dropout=0.0,
                 activation="silu", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("out_channels", out_channels)
        check_positive_int("num_layers", num_layers)
        check_in("attention", attention, ATTENTION_KINDS)
        if attention == "cross" and cross_attention_dim is None:
            raise ValueError("`cross_attention_dim` is required when `attention='cross'`.")
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.attention = attention
        self.num_heads = num_heads
        self.groups = groups
        self.epsilon = epsilon
        self.use_time_embedding = use_time_embedding
        self.time_embedding_norm = time_embedding_norm
        self.cross_attention_dim = cross_attention_dim
        self.transformer_layers = transformer_layers
        self.use_linear_projection = use_linear_projection
        self.attention_groups = attention_groups
        self.output_scale_factor = output_scale_factor
        self.dropout = dropout
        self.activation = activation

    def _make_layers(self, num_resnets):
        """`resnets` (resnet_0..) and `attentions` (attention_0.., None where the level has
        no attention): the middle block has one resnet more than attentions."""
        self.resnets = [self._resnet(f"resnet_{i}") for i in range(num_resnets)]
        self.attentions = [self._attention(f"attention_{i}") for i in range(self.num_layers)]

    def _resnet(self, name):
        return ResnetBlock2D(self.out_channels, groups=self.groups, epsilon=self.epsilon,
                             use_time_embedding=self.use_time_embedding,
                             time_embedding_norm=self.time_embedding_norm, dropout=self.dropout,
                             output_scale_factor=self.output_scale_factor,
                             activation=self.activation, name=name, dtype=self.dtype_policy)

    def _attention(self, name):
        if self.attention == "self":
            groups = self.groups if self.attention_groups is None else self.attention_groups
            groups = groups or None  # 0: no norm (diffusers' scale_shift middle block)
            return AttentionBlock2D(self.num_heads, groups=groups, epsilon=self.epsilon,
                                    rescale_output_factor=self.output_scale_factor, name=name,
                                    dtype=self.dtype_policy)
        if self.attention == "cross":
            return SpatialTransformer(self.num_heads, self.transformer_layers,
                                      self.cross_attention_dim, groups=self.groups,
                                      use_linear_projection=self.use_linear_projection,
                                      dropout=self.dropout, name=name, dtype=self.dtype_policy)
        return None

    def _build_attention(self, layer, shape, context_shape):
        if layer is None:
            return shape
        if self.attention == "cross":
            return _build(layer, shape, context_shape)
        return _build(layer, shape)

    def _apply_attention(self, layer, hidden, context, training):
        if layer is None:
            return hidden
        if self.attention == "cross":
            return invoke(layer, hidden, context, training=training)
        return invoke(layer, hidden, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            out_channels=self.out_channels, num_layers=self.num_layers, attention=self.attention,
            num_heads=self.num_heads, groups=self.groups, epsilon=self.epsilon,
            use_time_embedding=self.use_time_embedding,
            time_embedding_norm=self.time_embedding_norm,
            cross_attention_dim=self.cross_attention_dim,
            transformer_layers=self.transformer_layers,
            use_linear_projection=self.use_linear_projection,
            attention_groups=self.attention_groups,
            output_scale_factor=self.output_scale_factor, dropout=self.dropout,
            activation=self.activation)
        return config


@_serializable
class UNetDownBlock(_LevelBlock):
    """One encoder level: `num_layers` x (resnet [-> attention]) [-> downsample].

    diffusers' DownBlock2D / AttnDownBlock2D / CrossAttnDownBlock2D / DownEncoderBlock2D.
    Returns the hidden state and the skip tensors the decoder concatenates (one per
    layer, plus the downsampled output). channels_last.

    Args:
        out_channels: channels of this level.
        num_layers: resnets (each followed by attention when `attention` is set).
        attention: None, "self" (`AttentionBlock2D`) or "cross" (`SpatialTransformer`).
        num_heads: heads of the attention layers.
        add_downsample: end with a `Downsample2D`.
        downsample_padding: 1 (UNets) or 0 (the autoencoder).
        groups, epsilon: group norms of the resnets (and of the attention).
        use_time_embedding, time_embedding_norm, output_scale_factor, dropout, activation:
            as in `ResnetBlock2D`.
        cross_attention_dim, transformer_layers, use_linear_projection: as in
            `SpatialTransformer`.
        attention_groups: groups of the self-attention norm (defaults to `groups`; 0: no
            norm).

    Call args:
        inputs: [batch, height, width, channels]; time_embedding: [batch, time_dim] or
        None; context: [batch, text_length, cross_attention_dim] for cross-attention.

    Example:
    >>> block = UNetDownBlock(16, attention="self", num_heads=2, groups=4)
    >>> hidden, skips = block(keras.ops.zeros((1, 8, 8, 8)), keras.ops.zeros((1, 32)))
    >>> hidden.shape, len(skips)
    ((1, 4, 4, 16), 3)
    """

    def __init__(self, out_channels, add_downsample=True, downsample_padding=1, **kwargs):
        super().__init__(out_channels, **kwargs)
        self.add_downsample = add_downsample
        self.downsample_padding = downsample_padding
        self._make_layers(self.num_layers)
        self.downsample = (Downsample2D(out_channels, padding=downsample_padding,
                                        name="downsample", dtype=self.dtype_policy)
                           if add_downsample else None)

    def build(self, inputs_shape, time_embedding_shape=None, context_shape=None):
        self._output_shapes = self._shapes(inputs_shape, time_embedding_shape, context_shape,
                                           build=True)

    def _shapes(self, shape, time_embedding_shape, context_shape, build=False):
        skips = []
        for resnet, attention in zip(self.resnets, self.attentions):
            if build:
                shape = _build(resnet, shape, time_embedding_shape)
                shape = self._build_attention(attention, shape, context_shape)
            else:
                shape = tuple(shape[:-1]) + (self.out_channels,)
            skips.append(shape)
        if self.downsample is not None:
            shape = _build(self.downsample, shape) if build else (
                self.downsample.compute_output_shape(shape))
            skips.append(shape)
        return shape, skips

    def compute_output_shape(self, inputs_shape, time_embedding_shape=None, context_shape=None):
        return self._shapes(inputs_shape, time_embedding_shape, context_shape)

    def call(self, inputs, time_embedding=None, context=None, training=None):
        hidden, skips = inputs, []
        for resnet, attention in zip(self.resnets, self.attentions):
            hidden = invoke(resnet, hidden, time_embedding, training=training)
            hidden = self._apply_attention(attention, hidden, context, training)
            skips.append(hidden)
        if self.downsample is not None:
            hidden = invoke(self.downsample, hidden)
            skips.append(hidden)
        return hidden, skips

    def get_config(self):
        config = super().get_config()
        config.update(add_downsample=self.add_downsample,
                      downsample_padding=self.downsample_padding)
        return config


@_serializable
class UNetMidBlock(_LevelBlock):
    """The bottleneck: resnet, then `num_layers` x ([attention ->] resnet).

    diffusers' UNetMidBlock2D (self-attention; the autoencoder's too) and
    UNetMidBlock2DCrossAttn (`attention="cross"`). Arguments as `UNetDownBlock`, with
    `num_layers=1` by default. channels_last.

    Example:
    >>> block = UNetMidBlock(16, attention="self", groups=4)
    >>> block(keras.ops.zeros((1, 4, 4, 16)), keras.ops.zeros((1, 32))).shape
    (1, 4, 4, 16)
    """

    def __init__(self, out_channels, num_layers=1, **kwargs):
        super().__init__(out_channels, num_layers=num_layers, **kwargs)
        self._make_layers(self.num_layers + 1)

    def build(self, inputs_shape, time_embedding_shape=None, context_shape=None):
        shape = _build(self.resnets[0], inputs_shape, time_embedding_shape)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            shape = self._build_attention(attention, shape, context_shape)
            shape = _build(resnet, shape, time_embedding_shape)

    def compute_output_shape(self, inputs_shape, time_embedding_shape=None, context_shape=None):
        return tuple(inputs_shape[:-1]) + (self.out_channels,)

    def call(self, inputs, time_embedding=None, context=None, training=None):
        hidden = invoke(self.resnets[0], inputs, time_embedding, training=training)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            hidden = self._apply_attention(attention, hidden, context, training)
            hidden = invoke(resnet, hidden, time_embedding, training=training)
        return hidden


@_serializable
class UNetUpBlock(_LevelBlock):
    """One decoder level: `num_layers` x (concat skip -> resnet [-> attention]) [-> upsample].

    diffusers' UpBlock2D / AttnUpBlock2D / CrossAttnUpBlock2D, and UpDecoderBlock2D (the
    autoencoder: called without skips). Arguments as `UNetDownBlock`; `add_upsample` ends
    with an `Upsample2D`. channels_last.

    Call args:
        inputs: [batch, height, width, channels].
        skips: the encoder's skip tensors for this level, consumed from the last; None
            for a decoder without skip connections.
        time_embedding, context: as `UNetDownBlock`.

    Example:
    >>> block = UNetUpBlock(8, num_layers=1, groups=4, add_upsample=True)
    >>> block(keras.ops.zeros((1, 4, 4, 16)), [keras.ops.zeros((1, 4, 4, 8))],
    ...       keras.ops.zeros((1, 32))).shape
    (1, 8, 8, 8)
    """

    def __init__(self, out_channels, add_upsample=True, **kwargs):
        super().__init__(out_channels, **kwargs)
        self.add_upsample = add_upsample
        self._make_layers(self.num_layers)
        self.upsample = (Upsample2D(out_channels, name="upsample", dtype=self.dtype_policy)
                         if add_upsample else None)

    def build(self, inputs_shape, skips_shape=None, time_embedding_shape=None,
              context_shape=None):
        shape = inputs_shape
        skips = list(skips_shape) if skips_shape is not None else None
        for resnet, attention in zip(self.resnets, self.attentions):
            if skips is not None:
                shape = tuple(shape[:-1]) + (shape[-1] + skips.pop()[-1],)
            shape = _build(resnet, shape, time_embedding_shape)
            shape = self._build_attention(attention, shape, context_shape)
        if self.upsample is not None:
            _build(self.upsample, shape)

    def compute_output_shape(self, inputs_shape, skips_shape=None, time_embedding_shape=None,
                             context_shape=None):
        shape = tuple(inputs_shape[:-1]) + (self.out_channels,)
        return self.upsample.compute_output_shape(shape) if self.upsample is not None else shape

    def call(self, inputs, skips=None, time_embedding=None, context=None, training=None):
        hidden = inputs
        skips = list(skips) if skips is not None else None
        for resnet, attention in zip(self.resnets, self.attentions):
            if skips is not None:
                hidden = ops.concatenate([hidden, skips.pop()], axis=-1)
            hidden = invoke(resnet, hidden, time_embedding, training=training)
            hidden = self._apply_attention(attention, hidden, context, training)
        if self.upsample is not None:
            hidden = invoke(self.upsample, hidden)
        return hidden

    def get_config(self):
        config = super().get_config()
        config.update(add_upsample=self.add_upsample)
        return config


def check_level_channels(block_out_channels, norm_num_groups):
    """ValueError unless `block_out_channels` lists positive channel counts, one per level,
    each divisible by `norm_num_groups`.

    Example:
    >>> check_level_channels((32, 64), 8)
    """
    check_positive_int("norm_num_groups", norm_num_groups)
    if not block_out_channels:
        raise ValueError("`block_out_channels` must list one channel count per level.")
    for channels in block_out_channels:
        check_positive_int("block_out_channels", channels)
        if channels % norm_num_groups:
            raise ValueError(f"`norm_num_groups` ({norm_num_groups}) must divide every "
                             f"entry of `block_out_channels` {list(block_out_channels)}.")


def _per_level(value, levels):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels


def down_blocks(block_out_channels, num_layers, attention=None, num_heads=1,
                downsample_padding=1, dtype=None, **level_kwargs):
    """The encoder levels `down_block_0..`: each `UNetDownBlock` downsamples but the last.

    Args:
        block_out_channels: channels of each level.
        num_layers: resnets per level.
        attention: one kind for every level or one per level (None, "self", "cross").
        num_heads: one int or one per level.
        downsample_padding: 1 (UNets) or 0 (the autoencoder).
        dtype: the dtype policy.
        **level_kwargs: the other `UNetDownBlock` arguments (groups, epsilon, ...).

    Example:
    >>> [b.name for b in down_blocks((16, 32), 1, groups=4)]
    ['down_block_0', 'down_block_1']
    """
    levels = len(block_out_channels)
    attention = _per_level(attention, levels)
    num_heads = _per_level(num_heads, levels)
    return [UNetDownBlock(block_out_channels[i], num_layers=num_layers, attention=attention[i],
                          num_heads=num_heads[i], add_downsample=i < levels - 1,
                          downsample_padding=downsample_padding, name=f"down_block_{i}",
                          dtype=dtype, **level_kwargs)
            for i in range(levels)]


def up_blocks(block_out_channels, num_layers, attention=None, num_heads=1, dtype=None,
              **level_kwargs):
    """The mirrored decoder levels `up_block_0..` (deepest first): each `UNetUpBlock`
    upsamples but the last. Arguments are per encoder level, as `down_blocks`.

    Example:
    >>> [b.out_channels for b in up_blocks((16, 32), 2, groups=4)]
    [32, 16]
    """
    levels = len(block_out_channels)
    attention = _per_level(attention, levels)
    num_heads = _per_level(num_heads, levels)
    blocks = []
    for i in range(levels):
        level = levels - 1 - i
        blocks.append(UNetUpBlock(block_out_channels[level], num_layers=num_layers,
                                  attention=attention[level], num_heads=num_heads[level],
                                  add_upsample=i < levels - 1, name=f"up_block_{i}",
                                  dtype=dtype, **level_kwargs))
    return blocks
