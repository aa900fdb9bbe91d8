"""Presets of the diffusion networks and their analytic parameter counters.

Counts never allocate: `keras_bigmodels.flops.count_params("stable-diffusion-v1-unet")`
walks the config below (859,520,964 parameters, as diffusers' `UNet2DConditionModel` of
SD v1). Each network is its own registry family (`unet2d`, `unet2d_condition`,
`autoencoder_kl`), so that one counter answers for each.
"""

from keras_bigmodels.flops import register_flops_counter
from keras_bigmodels.presets import register_presets

SD_V1_SOURCE = ("Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion "
                "Models; the released CompVis/stable-diffusion-v1-4 {} config.json "
                "(diffusers)")
DDPM_SOURCE = ("Ho et al. 2020, Denoising Diffusion Probabilistic Models (CIFAR-10 model, "
               "35.7M parameters); the released google/ddpm-cifar10-32 config.json")

UNET2D_PRESETS = {
    "ddpm-cifar10": {
        "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 256, 256),
        "attention_levels": (False, True, False, False), "layers_per_block": 2,
        "attention_head_dim": None, "norm_num_groups": 32, "norm_eps": 1e-6,
        "flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0,
        "dropout": 0.1,
        "source": DDPM_SOURCE,
    },
}

UNET2D_CONDITION_PRESETS = {
    "stable-diffusion-v1-unet": {
        "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280),
        "cross_attention_levels": (True, True, True, False), "layers_per_block": 2,
        "num_heads": 8, "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5,
        "source": SD_V1_SOURCE.format("unet/"),
    },
}

AUTOENCODER_KL_PRESETS = {
    "stable-diffusion-v1-vae": {
        "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32,
        "scaling_factor": 0.18215,
        "source": SD_V1_SOURCE.format("vae/"),
    },
}


def _conv(kernel, channels_in, channels_out):
    return kernel * kernel * channels_in * channels_out + channels_out


def _dense(units_in, units_out, bias=True):
    return units_in * units_out + (units_out if bias else 0)


def _resnet(channels_in, channels_out, time_dim=None, scale_shift=False):
    total = 2 * channels_in + _conv(3, channels_in, channels_out)
    if time_dim:
        total += _dense(time_dim, channels_out * (2 if scale_shift else 1))
    total += 2 * channels_out + _conv(3, channels_out, channels_out)
    if channels_in != channels_out:
        total += _conv(1, channels_in, channels_out)
    return total


def _self_attention(channels, norm=True):
    # AttentionBlock2D: [group norm] + query/key/value/output with biases.
    return (2 * channels if norm else 0) + 4 * _dense(channels, channels)


def _spatial_transformer(channels, context_dim, layers):
    block = 2 * channels + 3 * _dense(channels, channels, bias=False) + _dense(channels, channels)
    if context_dim:
        block += (2 * channels + _dense(channels, channels, bias=False)
                  + 2 * _dense(context_dim, channels, bias=False) + _dense(channels, channels))
    block += 2 * channels + _dense(channels, 8 * channels) + _dense(4 * channels, channels)
    # group norm + in/out projections (1x1 convs and Dense layers count the same)
    return 2 * channels + 2 * _dense(channels, channels) + layers * block


def _walk_unet_levels(channels, layers_per_block, visit):
    """Sum `visit(kind, level, channels_in, channels_out)` over the down, middle and up levels.

    The one walk of the UNet layout (skip connections included) that both the parameter and
    the FLOP counters follow. `kind` is "resnet", "attention" (after each resnet of a level),
    "down" (the stride-2 conv leaving `level`), "mid_attention" or "up" (the conv after
    upsampling out of `level`); `level` 0 is the full resolution.
    """
    levels = len(channels)
    total, current = 0, channels[0]
    skips = [current]
    for level, out in enumerate(channels):
        for _ in range(layers_per_block):
            total += visit("resnet", level, current, out) + visit("attention", level, out, out)
            current = out
            skips.append(out)
        if level < levels - 1:
            total += visit("down", level, out, out)
            skips.append(out)
    total += 2 * visit("resnet", levels - 1, current, current)
    total += visit("mid_attention", levels - 1, current, current)
    for index in range(levels):
        level = levels - 1 - index
        out = channels[level]
        for _ in range(layers_per_block + 1):
            total += visit("resnet", level, current + skips.pop(), out)
            total += visit("attention", level, out, out)
            current = out
        if index < levels - 1:
            total += visit("up", level, out, out)
    return total


def _unet_levels(channels, layers_per_block, attention, time_dim, scale_shift, mid_attention):
    """Parameters of the down, middle and up levels, following the skip connections."""
    def visit(kind, level, channels_in, channels_out):
        if kind == "resnet":
            return _resnet(channels_in, channels_out, time_dim, scale_shift)
        if kind == "attention":
            return attention(level, channels_out)
        if kind == "mid_attention":
            return mid_attention(channels_out)
        return _conv(3, channels_out, channels_out)  # the down / up sampling conv
    return _walk_unet_levels(channels, layers_per_block, visit)


def _unet2d_options(config):
    channels = tuple(config.get("block_out_channels", (224, 448, 672, 896)))
    flags = config.get("attention_levels", (False, True, True, True))
    flags = tuple(flags) if isinstance(flags, (list, tuple)) else (flags,) * len(channels)
    time_dim = config.get("time_embedding_dim") or 4 * channels[0]
    scale_shift = config.get("time_embedding_norm", "default") == "scale_shift"
    return channels, flags, time_dim, scale_shift


def count_unet2d_params(config):
    """Parameters of a `UNet2D` config dict, exactly as `UNet2D(**config).count_params()`."""
    channels, flags, time_dim, scale_shift = _unet2d_options(config)
    in_channels, out_channels = config.get("in_channels", 3), config.get("out_channels", 3)
    mid_norm = (not scale_shift) or config.get("attention_norm_num_groups") is not None

    total = _conv(3, in_channels, channels[0])
    total += _dense(channels[0], time_dim) + _dense(time_dim, time_dim)
    if config.get("num_classes"):
        total += config["num_classes"] * time_dim
    total += _unet_levels(
        channels, config.get("layers_per_block", 2),
        lambda level, c: _self_attention(c) if flags[level] else 0, time_dim, scale_shift,
        lambda c: _self_attention(c, mid_norm) if config.get("mid_block_attention", True) else 0)
    total += 2 * channels[0] + _conv(3, channels[0], out_channels)
    return total


def unet2d_flops(config, image_size, training=True):
    """FLOPs of one image through a `UNet2D` config dict: forward, or forward and backward.

    Counts the multiply-adds of every convolution and dense layer (2 FLOPs each) and the
    attention products (QK^T and AV: 4 x pixels^2 x channels per attention block) at each
    level's resolution; norms, activations and the sinusoidal embedding are left out, as in
    the Transformer estimate of `keras_bigmodels.flops`. Training is 3x the forward (the
    backward computes input and weight gradients). `image_size` is the side of a square
    input (an int) or (height, width). Never allocates; a diffusion sampling step costs one
    forward (`training=False`) per image.

    Example:
    >>> unet2d_flops(presets.get_preset("ddpm-cifar10"), 32, training=False) / 1e9  # 12.4
    """
    sizes = (image_size, image_size) if isinstance(image_size, int) else image_size
    if (not isinstance(sizes, (list, tuple)) or len(sizes) != 2
            or not all(isinstance(n, int) and n > 0 for n in sizes)):
        raise ValueError("`image_size` must be a positive int or a (height, width) pair of "
                         f"them; received {image_size!r}.")
    height, width = sizes
    channels, flags, time_dim, scale_shift = _unet2d_options(config)
    factor = 2 ** (len(channels) - 1)
    if height % factor or width % factor:
        raise ValueError(f"`image_size` {image_size!r} is not divisible by the UNet's "
                         f"downsampling factor {factor}.")

    def pixels(level):
        return (height >> level) * (width >> level)

    def attention(level, c):
        return 2 * pixels(level) * 4 * c * c + 4 * pixels(level) ** 2 * c

    def visit(kind, level, channels_in, channels_out):
        if kind == "resnet":
            macs = pixels(level) * 9 * (channels_in + channels_out) * channels_out
            if channels_in != channels_out:
                macs += pixels(level) * channels_in * channels_out
            return 2 * (macs + time_dim * channels_out * (2 if scale_shift else 1))
        if kind == "attention":
            return attention(level, channels_out) if flags[level] else 0
        if kind == "mid_attention":
            return (attention(level, channels_out)
                    if config.get("mid_block_attention", True) else 0)
        # The down conv writes the next level's resolution; the up conv the one above.
        out_level = level + 1 if kind == "down" else level - 1
        return 2 * pixels(out_level) * 9 * channels_out * channels_out

    forward = 2 * (channels[0] * time_dim + time_dim * time_dim)
    forward += 2 * pixels(0) * 9 * (config.get("in_channels", 3) + config.get("out_channels", 3)
                                     ) * channels[0]
    forward += _walk_unet_levels(channels, config.get("layers_per_block", 2), visit)
    return 3 * forward if training else forward


def _unet2d_training_flops(config, image_size):
    """The `flops` registry counter: (training FLOPs, pixels) of one image of side image_size."""
    return unet2d_flops(config, image_size), image_size * image_size


def count_unet2d_condition_params(config):
    """Parameters of a `UNet2DCondition` config dict, as its `count_params()`."""
    channels = tuple(config.get("block_out_channels", (320, 640, 1280, 1280)))
    flags = config.get("cross_attention_levels", (True, True, True, False))
    flags = tuple(flags) if isinstance(flags, (list, tuple)) else (flags,) * len(channels)
    context_dim = config.get("cross_attention_dim", 768)
    layers = config.get("transformer_layers", 1)
    time_dim = 4 * channels[0]
    transformer = lambda c: _spatial_transformer(c, context_dim, layers)  # noqa: E731

    total = _conv(3, config.get("in_channels", 4), channels[0])
    total += _dense(channels[0], time_dim) + _dense(time_dim, time_dim)
    total += _unet_levels(channels, config.get("layers_per_block", 2),
                          lambda level, c: transformer(c) if flags[level] else 0, time_dim,
                          False, transformer)
    total += 2 * channels[0] + _conv(3, channels[0], config.get("out_channels", 4))
    if config.get("class_embedding_input_dim"):
        total += _dense(config["class_embedding_input_dim"], time_dim) + _dense(time_dim,
                                                                                 time_dim)
    return total


def count_autoencoder_kl_params(config):
    """Parameters of an `AutoencoderKL` config dict, as its `count_params()`."""
    channels = tuple(config.get("block_out_channels", (128, 256, 512, 512)))
    layers = config.get("layers_per_block", 2)
    latent = config.get("latent_channels", 4)
    levels = len(channels)
    attention = config.get("mid_block_attention", True)
    middle = 2 * _resnet(channels[-1], channels[-1]) + (
        _self_attention(channels[-1]) if attention else 0)

    encoder, current = _conv(3, config.get("in_channels", 3), channels[0]), channels[0]
    for level, out in enumerate(channels):
        for _ in range(layers):
            encoder += _resnet(current, out)
            current = out
        if level < levels - 1:
            encoder += _conv(3, out, out)
    encoder += middle + 2 * channels[-1] + _conv(3, channels[-1], 2 * latent)

    decoder, current = _conv(3, latent, channels[-1]) + middle, channels[-1]
    for index in range(levels):
        out = channels[levels - 1 - index]
        for _ in range(layers + 1):
            decoder += _resnet(current, out)
            current = out
        if index < levels - 1:
            decoder += _conv(3, out, out)
    decoder += 2 * channels[0] + _conv(3, channels[0], config.get("out_channels", 3))

    total = encoder + decoder
    if config.get("use_quant_conv", True):
        total += _conv(1, 2 * latent, 2 * latent)
    if config.get("use_post_quant_conv", True):
        total += _conv(1, latent, latent)
    return total


register_presets("unet2d", UNET2D_PRESETS, param_counter=count_unet2d_params)
register_flops_counter("unet2d", _unet2d_training_flops)
register_presets("unet2d_condition", UNET2D_CONDITION_PRESETS,
                 param_counter=count_unet2d_condition_params)
register_presets("autoencoder_kl", AUTOENCODER_KL_PRESETS,
                 param_counter=count_autoencoder_kl_params)
