"""CLIP weight names of local HF checkpoints (CLIPModel, CLIPTextModel, CLIPVisionModel).

Name table only; the helpers live in `keras_bigmodels.checkpoints`. `CLIPBackbone` reads
a `CLIPModel` directory (model_type "clip"); `CLIPTextEncoder` reads it too, or a
`CLIPTextModel` / `CLIPTextModelWithProjection` one ("clip_text_model": Stable
Diffusion's `text_encoder/`); `CLIPVisionEncoder` likewise with "clip_vision_model".
Stated re-layouts: the patch convolution (torch [out, in, kh, kw] -> ours [kh, kw, in,
out]); Linear kernels transposed; query/key/value split into heads by reshape.

transformers' config keeps `eos_token_id: 2` for OpenAI's checkpoints, its marker for
"pool at each row's largest id" (their `<|endoftext|>` is the last id); that maps to
our `eos_token_id=None`. Any other id pools at its first occurrence, as transformers.
"""

from keras_bigmodels.checkpoints import (WeightLoader, activation, check_model_type, conv,
                                         dense, embedding, encoder_block, norm,
                                         read_checkpoint)
from keras_bigmodels.models.clip.backbone import (CLIPBackbone, CLIPTextEncoder,
                                                  CLIPVisionEncoder)

BLOCK = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
         "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2")

# transformers' marker for argmax pooling (see the module docstring).
LEGACY_EOS_TOKEN_ID = 2


def text_kwargs(config):
    """Our CLIPTextEncoder kwargs from an HF CLIPTextConfig dict."""
    eos = config.get("eos_token_id", LEGACY_EOS_TOKEN_ID)
    return {
        "vocabulary_size": config["vocab_size"],
        "max_sequence_length": config.get("max_position_embeddings", 77),
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "activation": activation(config, default="quick_gelu"),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-5),
        "eos_token_id": None if eos == LEGACY_EOS_TOKEN_ID else eos,
    }


def vision_kwargs(config):
    """Our CLIPVisionEncoder kwargs from an HF CLIPVisionConfig dict."""
    return {
        "image_size": config.get("image_size", 224),
        "patch_size": config.get("patch_size", 32),
        "num_channels": config.get("num_channels", 3),
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "activation": activation(config, default="quick_gelu"),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-5),
    }


def backbone_kwargs(config):
    """Our flat CLIPBackbone kwargs from an HF CLIPConfig dict."""
    check_model_type(config, ("clip",), "CLIPBackbone.from_huggingface")
    text = text_kwargs(config["text_config"])
    vision = vision_kwargs(config["vision_config"])
    if text["layer_norm_epsilon"] != vision["layer_norm_epsilon"]:
        raise ValueError("CLIPBackbone shares one `layer_norm_epsilon`; this checkpoint's "
                         f"towers use {text['layer_norm_epsilon']} (text) and "
                         f"{vision['layer_norm_epsilon']} (vision).")
    return {
        "image_size": vision["image_size"], "patch_size": vision["patch_size"],
        "num_channels": vision["num_channels"], "vision_num_layers": vision["num_layers"],
        "vision_num_heads": vision["num_heads"], "vision_hidden_dim": vision["hidden_dim"],
        "vision_intermediate_dim": vision["intermediate_dim"],
        "vision_activation": vision["activation"],
        "vocabulary_size": text["vocabulary_size"],
        "max_sequence_length": text["max_sequence_length"],
        "text_num_layers": text["num_layers"], "text_num_heads": text["num_heads"],
        "text_hidden_dim": text["hidden_dim"], "text_intermediate_dim": text["intermediate_dim"],
        "text_activation": text["activation"], "eos_token_id": text["eos_token_id"],
        "projection_dim": config.get("projection_dim", 512),
        "layer_norm_epsilon": text["layer_norm_epsilon"],
    }


def assign_text(loader, encoder, prefix="text_model"):
    """Every CLIPTextEncoder variable from `{prefix}.*` names."""
    layer = encoder.get_layer("embedding")
    embedding(loader, layer.token_embedding, f"{prefix}.embeddings.token_embedding")
    embedding(loader, layer.position_embedding, f"{prefix}.embeddings.position_embedding")
    for i in range(encoder.num_layers):
        encoder_block(loader, encoder.get_layer(f"transformer_layer_{i}"),
                      f"{prefix}.encoder.layers.{i}", BLOCK)
    norm(loader, encoder.get_layer("final_norm"), f"{prefix}.final_layer_norm")


def assign_vision(loader, encoder, prefix="vision_model"):
    """Every CLIPVisionEncoder variable from `{prefix}.*` names."""
    layer = encoder.get_layer("embedding")
    loader.assign(layer.cls_token, f"{prefix}.embeddings.class_embedding")
    conv(loader, layer.patch_embedding.patch_projection, f"{prefix}.embeddings.patch_embedding")
    embedding(loader, layer.position_embedding, f"{prefix}.embeddings.position_embedding")
    norm(loader, encoder.get_layer("pre_norm"), f"{prefix}.pre_layrnorm")  # sic, HF's name
    for i in range(encoder.num_layers):
        encoder_block(loader, encoder.get_layer(f"transformer_layer_{i}"),
                      f"{prefix}.encoder.layers.{i}", BLOCK)
    norm(loader, encoder.get_layer("post_norm"), f"{prefix}.post_layernorm")


def _tower_config(config, key, model_type, reader):
    kind = check_model_type(config, ("clip", model_type), reader)
    return config[key] if kind == "clip" else config


def _with_tower_prefix(config, weights):
    """Tower checkpoints under one naming: older transformers save CLIPTextModel's
    weights as `text_model.*`, newer ones (and some exports) without the prefix."""
    prefix = {"clip_text_model": "text_model.",
              "clip_vision_model": "vision_model."}.get(config.get("model_type"))
    if prefix is None or any(name.startswith(prefix) for name in weights):
        return weights
    projections = ("text_projection.", "visual_projection.")
    return {name if name.startswith(projections) else prefix + name: value
            for name, value in weights.items()}


def load_backbone(cls, path, dtype=None, **overrides):
    """A `cls` (CLIPBackbone or one tower) with the checkpoint's weights.

    A tower ignores the other tower, the projections and the temperature of a full
    CLIPModel checkpoint, and the projection of a *WithProjection one.
    """
    config, weights = read_checkpoint(path)
    loader = WeightLoader(_with_tower_prefix(config, weights))
    if issubclass(cls, CLIPTextEncoder):
        kwargs = text_kwargs(_tower_config(config, "text_config", "clip_text_model",
                                           f"{cls.__name__}.from_huggingface"))
        model = cls(**{**kwargs, **overrides}, dtype=dtype)
        assign_text(loader, model)
        loader.finish(ignore=(r"(vision_model|visual_projection|text_projection|logit_scale)"
                              r"(\..*)?",))
        return model
    if issubclass(cls, CLIPVisionEncoder):
        kwargs = vision_kwargs(_tower_config(config, "vision_config", "clip_vision_model",
                                             f"{cls.__name__}.from_huggingface"))
        model = cls(**{**kwargs, **overrides}, dtype=dtype)
        assign_vision(loader, model)
        loader.finish(ignore=(r"(text_model|visual_projection|text_projection|logit_scale)"
                              r"(\..*)?",))
        return model
    if not issubclass(cls, CLIPBackbone):
        raise ValueError(f"{cls.__name__} is not a CLIP backbone.")
    model = cls(**{**backbone_kwargs(config), **overrides}, dtype=dtype)
    assign_text(loader, model.text_encoder)
    assign_vision(loader, model.vision_encoder)
    dense(loader, model.get_layer("image_projection"), "visual_projection")
    dense(loader, model.get_layer("text_projection"), "text_projection")
    loader.assign(model.get_layer("logit_scale").logit_scale, "logit_scale")
    loader.finish()
    return model
