"""Denoising UNets: `UNet2D` (DDPM, class-conditional) and `UNet2DCondition` (SD v1).

Both are Keras models over channels_last images [batch, height, width, channels] (NHWC),
with diffusers' numerics (`UNet2DModel` and `UNet2DConditionModel`), and one call
signature that the diffusion tasks rely on:

    unet([noisy_images, timesteps])                          # unconditional UNet2D
    unet([noisy_images, timesteps, class_labels])            # UNet2D(num_classes=...)
    unet([noisy_latents, timesteps, encoder_hidden_states])  # UNet2DCondition

`timesteps` are int32 or float [batch]; the prediction (noise, v or x0: whatever the
model was trained for) has the input's shape.
"""

import keras
from keras import ops

from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.layers.unet import (
    TimestepEmbedding,
    Timesteps,
    UNetMidBlock,
    check_level_channels,
    down_blocks,
    up_blocks,
)
from keras_bigmodels.models.base import SubclassedBackbone
from keras_bigmodels.utils import check_in, check_positive_int


def _as_tuple(value, length, name, kind=int):
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * length
    if len(values) != length:
        raise ValueError(f"`{name}` must have one entry per level ({length}, as "
                         f"`block_out_channels`); received {value!r}.")
    return tuple(kind(v) for v in values)


def check_image(images, in_channels, factor, argument="noisy_images"):
    """ValueError unless images are [batch, h, w, in_channels] with h, w divisible by factor.

    Static dimensions are checked; unknown (traced) ones are left to the graph.
    """
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"`{argument}` must be channels_last [batch, height, width, "
                         f"channels]; received shape {shape}.")
    if shape[-1] is not None and shape[-1] != in_channels:
        raise ValueError(f"`{argument}` has {shape[-1]} channels; this model takes "
                         f"`in_channels`={in_channels} (channels_last, the last axis).")
    for axis, size in zip(("height", "width"), shape[1:3]):
        if size is not None and size % factor:
            raise ValueError(f"`{argument}` {axis} {size} is not divisible by the UNet's "
                             f"downsampling factor {factor}; allowed sizes are multiples of "
                             f"{factor}.")


def _split_inputs(inputs, names):
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"`inputs` lacks {missing}; expected keys {names}.")
        return [inputs[n] for n in names]
    if not isinstance(inputs, (list, tuple)) or len(inputs) != len(names):
        raise ValueError(f"`inputs` must be a list [{', '.join(names)}]; received "
                         f"{type(inputs).__name__}"
                         + (f" of {len(inputs)}" if isinstance(inputs, (list, tuple)) else "")
                         + ".")
    return list(inputs)


def _timesteps(timesteps, batch):
    timesteps = ops.convert_to_tensor(timesteps)
    if len(timesteps.shape) == 0:
        timesteps = ops.broadcast_to(timesteps, (batch,))
    return timesteps


class _UNetLevels:
    """What both UNets share: levels, skips, the output head, `from_diffusers`.

    A mixin rather than a `Backbone` subclass, so that only the two networks (not this
    helper) are backbones for the registry and the sharding tests.
    """


    @classmethod
    def from_diffusers(cls, path, dtype=None, **overrides):
        """The model with the weights of a local diffusers directory (`save_pretrained`).

        Reads config.json and diffusion_pytorch_model.safetensors; nothing is downloaded
        and no torch is needed. Options of the config that this model does not build are
        refused by name.

        Args:
            path: the directory (e.g. a pipeline's `unet/` or `vae/` folder).
            dtype: the dtype policy (e.g. "bfloat16").
            **overrides: constructor kwargs to change (e.g. `dropout`).

        Example:
        >>> unet = UNet2DCondition.from_diffusers("stable-diffusion-v1-5/unet")
        """
        from keras_bigmodels.models.diffusion.huggingface import load_diffusers

        return load_diffusers(cls, path, dtype=dtype, **overrides)

    def _check_common(self, in_channels, out_channels, block_out_channels, layers_per_block,
                      norm_num_groups):
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("layers_per_block", layers_per_block)
        check_level_channels(block_out_channels, norm_num_groups)

    def _build_stem(self, block_out_channels, time_dim, flip_sin_to_cos, freq_shift):
        """The input conv and the timestep embedding, the same in both UNets."""
        dtype = self.dtype_policy
        # Keras' Conv2D, as output_conv (see `_build_levels`): .keras paths.
        self.input_conv = keras.layers.Conv2D(block_out_channels[0], 3, padding="same",
                                              name="input_conv", dtype=dtype)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift,
                                   name="time_proj", dtype=dtype)
        self.time_embedding = TimestepEmbedding(time_dim, name="time_embedding", dtype=dtype)

    def _time_embedding(self, timesteps, images):
        return invoke(self.time_embedding,
                      invoke(self.time_proj, _timesteps(timesteps, ops.shape(images)[0])))

    def _build_levels(self, block_out_channels, layers_per_block, attention, num_heads,
                      level_kwargs, mid_attention, mid_heads, mid_kwargs, downsample_padding):
        self.downsampling_factor = 2 ** (len(block_out_channels) - 1)
        dtype = self.dtype_policy
        self.down_blocks = down_blocks(block_out_channels, layers_per_block, attention,
                                       num_heads, downsample_padding, dtype, **level_kwargs)
        self.mid_block = UNetMidBlock(block_out_channels[-1], attention=mid_attention,
                                      num_heads=mid_heads, name="mid_block", dtype=dtype,
                                      **mid_kwargs)
        self.up_blocks = up_blocks(block_out_channels, layers_per_block + 1, attention,
                                   num_heads, dtype, **level_kwargs)
        # Keras' own classes, not ImageConv2D / ImageGroupNormalization: a .keras file
        # stores a model's layers that sort after its `layers` attribute under paths
        # numbered per class over all of the model's layers (input_conv is conv2d,
        # output_conv conv2d_1, output_norm group_normalization), which files saved before
        # must keep finding. Eager sampling on torch still runs them through the kernels
        # registered for these classes (`invoke`).
        self.output_norm = keras.layers.GroupNormalization(
            self.norm_num_groups, epsilon=self.norm_eps, name="output_norm", dtype=dtype)
        self.output_conv = keras.layers.Conv2D(self.out_channels, 3, padding="same",
                                               name="output_conv", dtype=dtype)

    def _unet(self, images, embedding, context, training):
        hidden = invoke(self.input_conv, images)
        skips = [hidden]
        for block in self.down_blocks:
            hidden, block_skips = invoke(block, hidden, embedding, context, training=training)
            skips.extend(block_skips)
        hidden = invoke(self.mid_block, hidden, embedding, context, training=training)
        for block in self.up_blocks:
            count = block.num_layers
            level_skips, skips = skips[-count:], skips[:-count]
            hidden = invoke(block, hidden, level_skips, embedding, context, training=training)
        hidden = ops.silu(invoke(self.output_norm, hidden))
        return invoke(self.output_conv, hidden)

    def _build_symbolic(self, extra_inputs):
        # Runs the forward pass on symbolic tensors of the smallest valid size: every
        # sublayer is built (variables created) without computing anything.
        # Two pixels at the lowest level and two text tokens: no size-1 softmax axis.
        size = 2 * self.downsampling_factor
        images = keras.KerasTensor((1, size, size, self.in_channels))
        timesteps = keras.KerasTensor((1,), dtype="int32")
        self.call([images, timesteps, *extra_inputs])
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.out_channels,)

    def compute_output_spec(self, inputs, training=None):
        images = inputs["noisy_images"] if isinstance(inputs, dict) else inputs[0]
        return keras.KerasTensor(tuple(images.shape[:-1]) + (self.out_channels,),
                                 dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class UNet2D(_UNetLevels, SubclassedBackbone):
    """diffusers' `UNet2DModel`: a DDPM UNet with optional class conditioning (channels_last).

    Levels of `layers_per_block` residual blocks (group norm, time embedding added),
    self-attention at the levels where `attention_levels` is True, downsampling by strided
    convs with skips to a mirrored decoder of `layers_per_block + 1` blocks per level.

    Call: `unet([noisy_images, timesteps])`, or `unet([noisy_images, timesteps,
    class_labels])` when `num_classes` is set; images [batch, height, width,
    in_channels] with height and width divisible by 2 ** (levels - 1); timesteps int32 or
    float [batch]; class labels int [batch] in [0, num_classes). Returns [batch, height,
    width, out_channels].

    Args:
        in_channels, out_channels: image channels in and out.
        block_out_channels: channels of each level.
        attention_levels: per level, whether its blocks have self-attention.
        layers_per_block: residual blocks per encoder level.
        attention_head_dim: the size of each attention head (heads = channels / it); None:
            one head per attention layer (as diffusers).
        norm_num_groups, norm_eps: group norms.
        mid_block_attention: self-attention in the middle block (diffusers' add_attention).
        attention_norm_num_groups: groups of the attention norms in the middle block
            (diffusers' `attn_norm_num_groups`); None: `norm_num_groups`.
        time_embedding_dim: width of the time embedding (4 x the first level's when None).
        flip_sin_to_cos, freq_shift: the sinusoidal timestep embedding.
        time_embedding_norm: "default" (add) or "scale_shift" (diffusers'
            `resnet_time_scale_shift`).
        mid_block_scale_factor: the middle block's output scale factor.
        downsample_padding: 1 (as diffusers' default).
        num_classes: class labels embedded and added to the time embedding; None: none.
        center_input_sample: map inputs from [0, 1] to [-1, 1] first.
        dropout: inside the residual blocks.

    Example:
    >>> unet = UNet2D(block_out_channels=(32, 64), attention_levels=(False, True),
    ...               norm_num_groups=8, num_classes=10)
    >>> images = keras.random.normal((2, 16, 16, 3))
    >>> unet([images, keras.ops.array([3, 999]), keras.ops.array([1, 7])]).shape
    (2, 16, 16, 3)
    """

    family = "unet2d"
    config_keys = ("in_channels", "out_channels", "block_out_channels", "attention_levels",
                   "layers_per_block", "attention_head_dim", "norm_num_groups", "norm_eps",
                   "mid_block_attention", "attention_norm_num_groups", "time_embedding_dim",
                   "flip_sin_to_cos", "freq_shift", "time_embedding_norm",
                   "mid_block_scale_factor", "downsample_padding", "num_classes",
                   "center_input_sample", "dropout")

    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(224, 448, 672, 896),
                 attention_levels=(False, True, True, True), layers_per_block=2,
                 attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5,
                 mid_block_attention=True, attention_norm_num_groups=None,
                 time_embedding_dim=None, flip_sin_to_cos=True, freq_shift=0,
                 time_embedding_norm="default", mid_block_scale_factor=1.0,
                 downsample_padding=1, num_classes=None, center_input_sample=False,
                 dropout=0.0, name="unet2d", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        block_out_channels = tuple(int(c) for c in block_out_channels)
        self._check_common(in_channels, out_channels, block_out_channels, layers_per_block,
                           norm_num_groups)
        levels = len(block_out_channels)
        attention_levels = _as_tuple(attention_levels, levels, "attention_levels", bool)
        check_in("time_embedding_norm", time_embedding_norm, ("default", "scale_shift"))
        check_in("downsample_padding", downsample_padding, (0, 1))
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        if attention_head_dim is not None:
            check_positive_int("attention_head_dim", attention_head_dim)
            for channels, used in zip(block_out_channels, attention_levels):
                if used and channels % attention_head_dim:
                    raise ValueError(f"`attention_head_dim` ({attention_head_dim}) must divide "
                                     f"the channels of every attention level "
                                     f"{list(block_out_channels)}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.block_out_channels = block_out_channels
        self.attention_levels = attention_levels
        self.layers_per_block = layers_per_block
        self.attention_head_dim = attention_head_dim
        self.norm_num_groups = norm_num_groups
        self.norm_eps = norm_eps
        self.mid_block_attention = mid_block_attention
        self.attention_norm_num_groups = attention_norm_num_groups
        self.time_embedding_dim = time_embedding_dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        self.time_embedding_norm = time_embedding_norm
        self.mid_block_scale_factor = mid_block_scale_factor
        self.downsample_padding = downsample_padding
        self.num_classes = num_classes
        self.center_input_sample = center_input_sample
        self.dropout = dropout

        heads = lambda channels: (1 if attention_head_dim is None  # noqa: E731
                                  else channels // attention_head_dim)
        time_dim = time_embedding_dim or 4 * block_out_channels[0]
        self._build_stem(block_out_channels, time_dim, flip_sin_to_cos, freq_shift)
        self.class_embedding = (keras.layers.Embedding(num_classes, time_dim,
                                                       name="class_embedding",
                                                       dtype=self.dtype_policy)
                                if num_classes is not None else None)
        level_kwargs = dict(groups=norm_num_groups, epsilon=norm_eps,
                            time_embedding_norm=time_embedding_norm, dropout=dropout)
        # diffusers drops the middle attention's norm under scale_shift unless
        # attn_norm_num_groups is given (attention_groups=0: no norm).
        if attention_norm_num_groups is None and time_embedding_norm != "default":
            attention_groups = 0
        else:
            attention_groups = attention_norm_num_groups
        mid_kwargs = dict(level_kwargs, output_scale_factor=mid_block_scale_factor,
                          attention_groups=attention_groups)
        self._build_levels(
            block_out_channels, layers_per_block,
            ["self" if used else None for used in attention_levels],
            [heads(c) for c in block_out_channels], level_kwargs,
            "self" if mid_block_attention else None, heads(block_out_channels[-1]), mid_kwargs,
            downsample_padding)
        self._build_symbolic([keras.KerasTensor((1,), dtype="int32")]
                             if num_classes is not None else [])

    @property
    def input_names(self):
        return ("noisy_images", "timesteps", "class_labels")[:3 if self.num_classes else 2]

    def call(self, inputs, training=None):
        images, timesteps, *labels = _split_inputs(inputs, self.input_names)
        check_image(images, self.in_channels, self.downsampling_factor)
        if self.center_input_sample:
            images = 2.0 * images - 1.0
        embedding = self._time_embedding(timesteps, images)
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(labels[0])
        return self._unet(images, embedding, None, training)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class UNet2DCondition(_UNetLevels, SubclassedBackbone):
    """diffusers' `UNet2DConditionModel` in Stable Diffusion v1's layout (channels_last).

    Like `UNet2D`, with a spatial transformer (self-attention, cross-attention on the
    text encoder's hidden states, GEGLU feed-forward) after each residual block of the
    levels where `cross_attention_levels` is True, and in the middle block.

    Call: `unet([noisy_latents, timesteps, encoder_hidden_states])`; latents [batch,
    height, width, in_channels] with height and width divisible by 2 ** (levels - 1),
    timesteps int32 or float [batch], encoder hidden states [batch, text_length,
    cross_attention_dim]. Returns [batch, height, width, out_channels]. With
    `class_embedding_input_dim` set, a fourth input `class_labels` [batch,
    class_embedding_input_dim] (float vectors, e.g. unCLIP's CLIP image embedding) goes
    through a two-layer MLP and is added to the time embedding (diffusers'
    `class_embed_type="projection"`).

    Args:
        in_channels, out_channels: latent channels in and out.
        block_out_channels: channels of each level.
        cross_attention_levels: per level, whether its blocks have a spatial transformer.
        layers_per_block: residual blocks per encoder level.
        num_heads: attention heads, one int or one per level (diffusers' SD v1 config calls
            this `attention_head_dim`=8).
        cross_attention_dim: width of the text embeddings (768 for CLIP ViT-L/14).
        transformer_layers: transformer blocks in each spatial transformer.
        use_linear_projection: Dense instead of 1x1 conv in/out projections (SD 2).
        norm_num_groups, norm_eps: group norms.
        flip_sin_to_cos, freq_shift: the sinusoidal timestep embedding.
        downsample_padding: 1.
        dropout: inside residual and transformer blocks.
        class_embedding_input_dim: width of the added-embedding input (diffusers'
            `projection_class_embeddings_input_dim`); None: no such input.

    Example:
    >>> unet = UNet2DCondition(block_out_channels=(32, 64), cross_attention_levels=(True, False),
    ...                        num_heads=2, cross_attention_dim=16, norm_num_groups=8)
    >>> latents = keras.random.normal((2, 8, 8, 4))
    >>> unet([latents, keras.ops.array([1, 500]), keras.random.normal((2, 5, 16))]).shape
    (2, 8, 8, 4)
    """

    family = "unet2d_condition"
    config_keys = ("in_channels", "out_channels", "block_out_channels",
                   "cross_attention_levels", "layers_per_block", "num_heads",
                   "cross_attention_dim", "transformer_layers", "use_linear_projection",
                   "norm_num_groups", "norm_eps", "flip_sin_to_cos", "freq_shift",
                   "downsample_padding", "dropout", "class_embedding_input_dim")

    def __init__(self, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 cross_attention_levels=(True, True, True, False), layers_per_block=2,
                 num_heads=8, cross_attention_dim=768, transformer_layers=1,
                 use_linear_projection=False, norm_num_groups=32, norm_eps=1e-5,
                 flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, dropout=0.0,
                 class_embedding_input_dim=None, name="unet2d_condition", dtype=None,
                 **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        block_out_channels = tuple(int(c) for c in block_out_channels)
        self._check_common(in_channels, out_channels, block_out_channels, layers_per_block,
                           norm_num_groups)
        levels = len(block_out_channels)
        cross_attention_levels = _as_tuple(cross_attention_levels, levels,
                                           "cross_attention_levels", bool)
        heads = _as_tuple(num_heads, levels, "num_heads")
        for channels, count in zip(block_out_channels, heads):
            check_positive_int("num_heads", count)
            if channels % count:
                raise ValueError(f"`num_heads` {num_heads} must divide the channels of each "
                                 f"level {list(block_out_channels)}.")
        check_positive_int("cross_attention_dim", cross_attention_dim)
        check_positive_int("transformer_layers", transformer_layers)
        check_in("downsample_padding", downsample_padding, (0, 1))
        if class_embedding_input_dim is not None:
            check_positive_int("class_embedding_input_dim", class_embedding_input_dim)
        self.class_embedding_input_dim = class_embedding_input_dim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.block_out_channels = block_out_channels
        self.cross_attention_levels = cross_attention_levels
        self.layers_per_block = layers_per_block
        self.num_heads = num_heads if isinstance(num_heads, int) else heads
        self.cross_attention_dim = cross_attention_dim
        self.transformer_layers = transformer_layers
        self.use_linear_projection = use_linear_projection
        self.norm_num_groups = norm_num_groups
        self.norm_eps = norm_eps
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        self.downsample_padding = downsample_padding
        self.dropout = dropout

        time_dim = 4 * block_out_channels[0]
        self._build_stem(block_out_channels, time_dim, flip_sin_to_cos, freq_shift)
        # diffusers' class_embed_type="projection": a vector (unCLIP's CLIP image
        # embedding) through a timestep-style MLP, added to the time embedding.
        self.class_embedding = (TimestepEmbedding(time_dim, name="class_embedding",
                                                  dtype=self.dtype_policy)
                                if class_embedding_input_dim is not None else None)
        level_kwargs = dict(groups=norm_num_groups, epsilon=norm_eps, dropout=dropout,
                            cross_attention_dim=cross_attention_dim,
                            transformer_layers=transformer_layers,
                            use_linear_projection=use_linear_projection)
        self._build_levels(
            block_out_channels, layers_per_block,
            ["cross" if used else None for used in cross_attention_levels], heads,
            level_kwargs, "cross", heads[-1], level_kwargs, downsample_padding)
        extra = [keras.KerasTensor((1, 2, cross_attention_dim))]
        if class_embedding_input_dim is not None:
            extra.append(keras.KerasTensor((1, class_embedding_input_dim)))
        self._build_symbolic(extra)

    @property
    def input_names(self):
        names = ("noisy_latents", "timesteps", "encoder_hidden_states", "class_labels")
        return names[:4 if self.class_embedding_input_dim is not None else 3]

    def call(self, inputs, training=None):
        latents, timesteps, context, *added = _split_inputs(inputs, self.input_names)
        check_image(latents, self.in_channels, self.downsampling_factor, "noisy_latents")
        context_shape = tuple(context.shape)
        if len(context_shape) != 3 or context_shape[-1] not in (None, self.cross_attention_dim):
            raise ValueError(f"`encoder_hidden_states` must be [batch, text_length, "
                             f"cross_attention_dim={self.cross_attention_dim}]; received "
                             f"shape {context_shape}.")
        embedding = self._time_embedding(timesteps, latents)
        if self.class_embedding is not None:
            added = added[0]
            if len(added.shape) != 2 or added.shape[-1] not in (
                    None, self.class_embedding_input_dim):
                raise ValueError(f"`class_labels` must be [batch, class_embedding_input_dim="
                                 f"{self.class_embedding_input_dim}] (e.g. CLIP image "
                                 f"embeddings); received shape {tuple(added.shape)}.")
            embedding = embedding + self.class_embedding(ops.cast(added, embedding.dtype))
        return self._unet(latents, embedding, context, training)
