"""diffusers checkpoints -> our UNet2D, UNet2DCondition and AutoencoderKL (names only).

A diffusers model directory (`save_pretrained`) holds config.json and
diffusion_pytorch_model.safetensors (or a sharded index). This module turns the config
into our constructor kwargs (refusing options we do not build, by name) and assigns every
tensor through `checkpoints.WeightLoader`, shapes strict. The re-layouts, all stated:

- torch Conv2d kernels [out, in, kh, kw] -> Keras Conv2D [kh, kw, in, out]
  (`checkpoints.conv`, transpose (2, 3, 1, 0));
- torch Linear [out, in] -> Dense [in, out] (transposed), and for attention projections
  reshaped into heads ([in, heads, head_dim] / [heads, head_dim, out], `checkpoints.attention`);
- the GEGLU input projection `ff.net.0.proj` [2 * inner, dim] is split in two: its first
  half (rows) is our `intermediate`, its second half our `intermediate_gate`, each
  transposed (diffusers computes `hidden * gelu(gate)` from the two halves).

Images and latents are channels_last in our models; diffusers' are channels first.
"""

import json
import os

from keras_bigmodels import checkpoints
from keras_bigmodels.checkpoints import WeightLoader, conv, dense, embedding, norm

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def read_diffusers(path):
    """(config, weights) of a local diffusers model directory (no download, no torch).

    Example:
    >>> config, weights = read_diffusers("unet/")   # written by UNet2DModel.save_pretrained
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"`{path}` is not a directory; `from_diffusers` reads a local "
                         "diffusers model directory (config.json + "
                         f"{WEIGHTS_NAME}); nothing is downloaded.")
    config = checkpoints.read_config(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    single = os.path.join(path, WEIGHTS_NAME)
    index = os.path.join(path, WEIGHTS_NAME + ".index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            files = [os.path.join(path, name)
                     for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        raise ValueError(f"No {WEIGHTS_NAME} (or its index) in `{path}`; save the model with "
                         "`save_pretrained(..., safe_serialization=True)`.")
    weights = {}
    for file in files:
        try:
            weights.update(load_file(file))
        except SafetensorError as error:
            raise ValueError(f"`{file}` is not a readable safetensors file ({error}).") from None
    return config, weights


def _check_class(config, expected, reader):
    name = config.get("_class_name")
    if name is not None and name != expected:
        raise ValueError(f"config.json describes a {name!r}; {reader} reads {expected!r} "
                         "directories.")


def _require(config, key, allowed, default, reader):
    value = config.get(key, default)
    if isinstance(value, list):
        value = tuple(value)
    if value not in allowed:
        raise ValueError(f"{reader} does not build config.json's `{key}`={value!r}; supported: "
                         f"{', '.join(repr(a) for a in allowed)}.")
    return value


def _level_flags(config, down_types, up_types, reader):
    """Per-level attention flags from diffusers' block type names (up mirrored)."""
    down = tuple(config["down_block_types"])
    up = tuple(config["up_block_types"])
    if len(down) != len(up) or len(down) != len(config["block_out_channels"]):
        raise ValueError(f"config.json must give one down and one up block type per entry of "
                         f"`block_out_channels`; received {down} and {up}.")
    flags = []
    for level, (down_type, up_type) in enumerate(zip(down, reversed(up))):
        if down_type not in down_types or up_type not in up_types:
            raise ValueError(f"{reader} reads down blocks {sorted(down_types)} and up blocks "
                             f"{sorted(up_types)}; config.json has {down_type!r} / {up_type!r} "
                             f"at level {level}.")
        if down_types[down_type] != up_types[up_type]:
            raise ValueError(f"{reader} needs mirrored levels: down {down_type!r} pairs with "
                             f"up {up_type!r} at level {level}.")
        flags.append(down_types[down_type])
    return tuple(flags)


# Config conversion ---------------------------------------------------------------------------

def unet2d_kwargs(config):
    """Our `UNet2D` kwargs from a diffusers `UNet2DModel` config.json."""
    reader = "UNet2D.from_diffusers"
    _check_class(config, "UNet2DModel", reader)
    _require(config, "time_embedding_type", ("positional",), "positional", reader)
    _require(config, "act_fn", ("silu", "swish"), "silu", reader)
    _require(config, "downsample_type", ("conv",), "conv", reader)
    _require(config, "upsample_type", ("conv",), "conv", reader)
    _require(config, "class_embed_type", (None,), None, reader)
    _require(config, "mid_block_type", ("UNetMidBlock2D",), "UNetMidBlock2D", reader)
    attention_levels = _level_flags(
        config, {"DownBlock2D": False, "AttnDownBlock2D": True},
        {"UpBlock2D": False, "AttnUpBlock2D": True}, reader)
    return dict(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        block_out_channels=tuple(config["block_out_channels"]),
        attention_levels=attention_levels,
        layers_per_block=config.get("layers_per_block", 2),
        attention_head_dim=config.get("attention_head_dim", 8),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        mid_block_attention=config.get("add_attention", True),
        attention_norm_num_groups=config.get("attn_norm_num_groups"),
        time_embedding_dim=config.get("time_embedding_dim"),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        time_embedding_norm=_require(config, "resnet_time_scale_shift",
                                     ("default", "scale_shift"), "default", reader),
        mid_block_scale_factor=config.get("mid_block_scale_factor", 1),
        downsample_padding=config.get("downsample_padding", 1),
        num_classes=config.get("num_class_embeds"),
        center_input_sample=config.get("center_input_sample", False),
        dropout=config.get("dropout", 0.0),
    )


def unet2d_condition_kwargs(config):
    """Our `UNet2DCondition` kwargs from a diffusers `UNet2DConditionModel` config.json."""
    reader = "UNet2DCondition.from_diffusers"
    _check_class(config, "UNet2DConditionModel", reader)
    defaults = {  # options outside SD v1/v2's layout, with the only values we build
        "time_embedding_type": ("positional",), "act_fn": ("silu", "swish"),
        "only_cross_attention": (False,), "dual_cross_attention": (False,),
        "class_embed_type": (None, "projection"), "addition_embed_type": (None,),
        "num_class_embeds": (None,), "encoder_hid_dim": (None,),
        "encoder_hid_dim_type": (None,), "time_embedding_dim": (None,),
        "time_embedding_act_fn": (None,), "timestep_post_act": (None,),
        "time_cond_proj_dim": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
        "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,),
        "resnet_out_scale_factor": (1.0,), "mid_block_scale_factor": (1.0,),
        "center_input_sample": (False,), "attention_type": ("default",),
        "class_embeddings_concat": (False,), "cross_attention_norm": (None,),
        "mid_block_type": ("UNetMidBlock2DCrossAttn",),
        "reverse_transformer_layers_per_block": (None,),
        "mid_block_only_cross_attention": (None, False),
    }
    for key, allowed in defaults.items():
        _require(config, key, allowed, allowed[0], reader)
    levels = _level_flags(
        config, {"DownBlock2D": False, "CrossAttnDownBlock2D": True},
        {"UpBlock2D": False, "CrossAttnUpBlock2D": True}, reader)
    for key in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block"):
        if isinstance(config.get(key), (list, tuple)):
            raise ValueError(f"{reader} reads one int `{key}` for every level; config.json "
                             f"has {config[key]!r}.")
    # diffusers' legacy naming: `attention_head_dim` holds the number of heads unless
    # `num_attention_heads` is given.
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    return dict(
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4),
        block_out_channels=tuple(config["block_out_channels"]),
        cross_attention_levels=levels,
        layers_per_block=config.get("layers_per_block", 2),
        num_heads=list(heads) if isinstance(heads, (list, tuple)) else heads,
        cross_attention_dim=config.get("cross_attention_dim", 1280),
        transformer_layers=config.get("transformer_layers_per_block", 1),
        use_linear_projection=config.get("use_linear_projection", False),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        downsample_padding=config.get("downsample_padding", 1),
        dropout=config.get("dropout", 0.0),
        class_embedding_input_dim=_projection_class_dim(config, reader),
    )


def _projection_class_dim(config, reader):
    # class_embed_type="projection": an MLP from a vector (unCLIP's image embedding) to the
    # time embedding, our `class_embedding_input_dim`.
    if config.get("class_embed_type") != "projection":
        return None
    dim = config.get("projection_class_embeddings_input_dim")
    if not isinstance(dim, int):
        raise ValueError(f"{reader}: class_embed_type='projection' needs an int "
                         f"`projection_class_embeddings_input_dim`; config.json has {dim!r}.")
    return dim


def autoencoder_kl_kwargs(config):
    """Our `AutoencoderKL` kwargs from a diffusers `AutoencoderKL` config.json."""
    reader = "AutoencoderKL.from_diffusers"
    _check_class(config, "AutoencoderKL", reader)
    _require(config, "act_fn", ("silu", "swish"), "silu", reader)
    levels = len(config["block_out_channels"])
    _require(config, "down_block_types", (("DownEncoderBlock2D",) * levels,),
             ("DownEncoderBlock2D",) * levels, reader)
    _require(config, "up_block_types", (("UpDecoderBlock2D",) * levels,),
             ("UpDecoderBlock2D",) * levels, reader)
    return dict(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config.get("layers_per_block", 1),
        latent_channels=config.get("latent_channels", 4),
        norm_num_groups=config.get("norm_num_groups", 32),
        scaling_factor=config.get("scaling_factor", 0.18215),
        shift_factor=config.get("shift_factor"),
        use_quant_conv=config.get("use_quant_conv", True),
        use_post_quant_conv=config.get("use_post_quant_conv", True),
        mid_block_attention=config.get("mid_block_add_attention", True),
    )


# Weight mapping ------------------------------------------------------------------------------

def _resnet(loader, block, name):
    norm(loader, block.norm1, f"{name}.norm1")
    conv(loader, block.conv1, f"{name}.conv1")
    if block.use_time_embedding:
        dense(loader, block.time_projection, f"{name}.time_emb_proj")
    norm(loader, block.norm2, f"{name}.norm2")
    conv(loader, block.conv2, f"{name}.conv2")
    if block.shortcut is not None:
        conv(loader, block.shortcut, f"{name}.conv_shortcut")


def _projections(loader, attention, name):
    checkpoints.attention(loader, attention, f"{name}.to_q", f"{name}.to_k", f"{name}.to_v",
                          f"{name}.to_out.0")


def _attention_block(loader, block, name):
    if block.group_norm is not None:
        norm(loader, block.group_norm, f"{name}.group_norm")
    _projections(loader, block.attention, name)


def _geglu(loader, feedforward, name):
    inner = feedforward.intermediate_dim
    # ff.net.0.proj: [2 * inner, dim]; rows [:inner] are the value half, [inner:] the gate.
    for layer, rows in ((feedforward.intermediate, slice(0, inner)),
                        (feedforward.intermediate_gate, slice(inner, 2 * inner))):
        loader.assign(layer.kernel, f"{name}.net.0.proj.weight",
                      transform=lambda w, rows=rows: w[rows], transpose=True)
        loader.assign(layer.bias, f"{name}.net.0.proj.bias", transform=lambda b, rows=rows: b[rows])
    dense(loader, feedforward.output_dense, f"{name}.net.2")


def _spatial_transformer(loader, layer, name):
    norm(loader, layer.norm, f"{name}.norm")
    project = dense if layer.use_linear_projection else conv
    project(loader, layer.projection_in, f"{name}.proj_in")
    for index, block in enumerate(layer.blocks):
        prefix = f"{name}.transformer_blocks.{index}"
        norm(loader, block.norm1, f"{prefix}.norm1")
        _projections(loader, block.self_attention, f"{prefix}.attn1")
        if block.cross_attention is not None:
            norm(loader, block.norm2, f"{prefix}.norm2")
            _projections(loader, block.cross_attention, f"{prefix}.attn2")
        norm(loader, block.norm3, f"{prefix}.norm3")
        _geglu(loader, block.feedforward, f"{prefix}.ff")
    project(loader, layer.projection_out, f"{name}.proj_out")


def _level(loader, block, name):
    for index, resnet in enumerate(block.resnets):
        _resnet(loader, resnet, f"{name}.resnets.{index}")
    for index, attention in enumerate(getattr(block, "attentions", ())):
        if attention is None:
            continue
        if block.attention == "cross":
            _spatial_transformer(loader, attention, f"{name}.attentions.{index}")
        else:
            _attention_block(loader, attention, f"{name}.attentions.{index}")
    if getattr(block, "downsample", None) is not None:
        conv(loader, block.downsample.conv, f"{name}.downsamplers.0.conv")
    if getattr(block, "upsample", None) is not None:
        conv(loader, block.upsample.conv, f"{name}.upsamplers.0.conv")


def _unet_weights(loader, model):
    conv(loader, model.input_conv, "conv_in")
    time_mlp = model.time_embedding.feedforward
    dense(loader, time_mlp.intermediate, "time_embedding.linear_1")
    dense(loader, time_mlp.output_dense, "time_embedding.linear_2")
    class_embedding = getattr(model, "class_embedding", None)
    if class_embedding is not None and hasattr(class_embedding, "feedforward"):
        dense(loader, class_embedding.feedforward.intermediate, "class_embedding.linear_1")
        dense(loader, class_embedding.feedforward.output_dense, "class_embedding.linear_2")
    elif class_embedding is not None:
        embedding(loader, class_embedding, "class_embedding")
    for index, block in enumerate(model.down_blocks):
        _level(loader, block, f"down_blocks.{index}")
    _level(loader, model.mid_block, "mid_block")
    for index, block in enumerate(model.up_blocks):
        _level(loader, block, f"up_blocks.{index}")
    norm(loader, model.output_norm, "conv_norm_out")
    conv(loader, model.output_conv, "conv_out")


def _coder_weights(loader, coder, name):
    conv(loader, coder.input_conv, f"{name}.conv_in")
    prefix = "up_blocks" if coder.decoder else "down_blocks"
    for index, block in enumerate(coder.blocks):
        _level(loader, block, f"{name}.{prefix}.{index}")
    _level(loader, coder.mid_block, f"{name}.mid_block")
    norm(loader, coder.output_norm, f"{name}.conv_norm_out")
    conv(loader, coder.output_conv, f"{name}.conv_out")


def _autoencoder_weights(loader, model):
    _coder_weights(loader, model.encoder, "encoder")
    _coder_weights(loader, model.decoder, "decoder")
    if model.quant_conv is not None:
        conv(loader, model.quant_conv, "quant_conv")
    if model.post_quant_conv is not None:
        conv(loader, model.post_quant_conv, "post_quant_conv")


KWARGS = {"UNet2D": unet2d_kwargs, "UNet2DCondition": unet2d_condition_kwargs,
          "AutoencoderKL": autoencoder_kl_kwargs}
WEIGHTS = {"UNet2D": _unet_weights, "UNet2DCondition": _unet_weights,
           "AutoencoderKL": _autoencoder_weights}


def load_diffusers(cls, path, dtype=None, **overrides):
    """A `cls` (UNet2D, UNet2DCondition or AutoencoderKL) with a diffusers directory's weights.

    Args:
        cls: the model class; its name selects the config conversion and name table.
        path: the directory written by the diffusers model's `save_pretrained`.
        dtype: the dtype policy (e.g. "bfloat16").
        **overrides: constructor kwargs to change (e.g. `dropout`).

    Example:
    >>> unet = load_diffusers(UNet2D, "ddpm-cifar10-32/unet")
    """
    kind = next((base.__name__ for base in cls.__mro__ if base.__name__ in KWARGS), None)
    if kind is None:
        raise ValueError(f"`cls` must be one of {', '.join(KWARGS)}; received {cls.__name__}.")
    config, weights = read_diffusers(path)
    kwargs = KWARGS[kind](config)
    kwargs.update(overrides)
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = cls(**kwargs)
    loader = WeightLoader(weights)
    WEIGHTS[kind](loader, model)
    loader.finish()
    return model
