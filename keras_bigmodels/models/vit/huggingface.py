"""ViT weight names of local HF checkpoints (ViTModel, ViTForImageClassification).

Name table only; the mapping helpers live in `keras_bigmodels.checkpoints`. HF keeps the
class token as [1, 1, hidden] and the position table as [1, 1 + patches, hidden]: both
are reshaped (stated) onto our [hidden] and [1 + patches, hidden].
"""

from keras_bigmodels.checkpoints import (WeightLoader, activation, check_model_type, conv,
                                         dense, encoder_block, norm, pre_norm_block_names,
                                         read_checkpoint)

BLOCK = pre_norm_block_names("attention.attention")


def backbone_kwargs(config):
    """Our ViTBackbone kwargs from an HF ViTConfig dict."""
    check_model_type(config, ("vit",), "ViTBackbone.from_huggingface")
    if not config.get("qkv_bias", True):
        raise ValueError("ViT checkpoints without query/key/value biases (qkv_bias=False) are "
                         "not supported.")
    return {
        "image_size": config.get("image_size", 224),
        "patch_size": config.get("patch_size", 16),
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "num_channels": config.get("num_channels", 3),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12),
        "activation": activation(config),
    }


def assign_weights(backbone, loader):
    """Every backbone variable from the checkpoint (the classifier head is left unread)."""
    embedding = backbone.get_layer("embedding")
    loader.assign(embedding.cls_token, "embeddings.cls_token", reshape=True)
    loader.assign(embedding.position_embedding.embeddings, "embeddings.position_embeddings",
                  reshape=True)
    conv(loader, embedding.patch_embedding.patch_projection,
         "embeddings.patch_embeddings.projection")
    for i in range(backbone.num_layers):
        encoder_block(loader, backbone.get_layer(f"transformer_layer_{i}"), f"encoder.layer.{i}",
                      BLOCK)
    norm(loader, backbone.get_layer("final_norm"), "layernorm")
    if backbone.use_pooler:
        dense(loader, backbone.get_layer("pooler"), "pooler.dense")


def read_backbone(cls, path, dtype=None, **overrides):
    """(backbone, loader): a `cls` with the checkpoint's weights; `classifier.*` unread.

    An `image_size` override other than the checkpoint's builds the checkpoint's model,
    then resizes it (position table interpolated bicubically, as HF's
    `interpolate_pos_encoding`).
    """
    config, weights = read_checkpoint(path)
    kwargs = backbone_kwargs(config)
    kwargs["use_pooler"] = "pooler.dense.weight" in weights or "vit.pooler.dense.weight" in weights
    image_size = overrides.pop("image_size", None)
    backbone = cls(**{**kwargs, **overrides}, dtype=dtype)
    # The mask token serves masked-image pretraining, which these models do not do.
    loader = WeightLoader(weights, prefixes=("vit.",), ignore=(r"embeddings\.mask_token",))
    assign_weights(backbone, loader)
    if image_size is not None:
        backbone = backbone.with_image_size(image_size)
    return backbone, loader


def load_backbone(cls, path, dtype=None, **overrides):
    """A `cls` with the checkpoint's weights (`Backbone.from_huggingface`); head ignored."""
    backbone, loader = read_backbone(cls, path, dtype, **overrides)
    loader.finish(ignore=(r"classifier\..*",))
    return backbone
