"""Swin weight names of local HF checkpoints (SwinModel, SwinForImageClassification).

Name table only; the mapping helpers live in `keras_bigmodels.checkpoints`.
"""

from keras_bigmodels.checkpoints import (WeightLoader, activation, check_model_type, conv,
                                         dense, encoder_block, norm, pre_norm_block_names,
                                         read_checkpoint)

BLOCK = pre_norm_block_names("attention.self")


def backbone_kwargs(config):
    """Our SwinBackbone kwargs from an HF SwinConfig dict."""
    check_model_type(config, ("swin",), "SwinBackbone.from_huggingface")
    if config.get("use_absolute_embeddings", False):
        raise ValueError("Swin checkpoints with absolute position embeddings "
                         "(use_absolute_embeddings=True) are not supported.")
    if not config.get("qkv_bias", True):
        raise ValueError("Swin checkpoints without query/key/value biases are not supported.")
    return {
        "image_size": config.get("image_size", 224),
        "patch_size": config.get("patch_size", 4),
        "hidden_dim": config["embed_dim"],
        "depths": list(config["depths"]),
        "num_heads": list(config["num_heads"]),
        "window_size": config.get("window_size", 7),
        "mlp_ratio": config.get("mlp_ratio", 4.0),
        "num_channels": config.get("num_channels", 3),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-5),
        "activation": activation(config),
    }


def assign_weights(backbone, loader):
    """Every backbone variable from the checkpoint (the classifier head is left unread)."""
    conv(loader, backbone.get_layer("patch_embedding").patch_projection,
         "embeddings.patch_embeddings.projection")
    norm(loader, backbone.get_layer("embedding_norm"), "embeddings.norm")
    for stage, depth in enumerate(backbone.depths):
        for index in range(depth):
            layer = backbone.get_layer(f"stage_{stage}_block_{index}")
            prefix = f"encoder.layers.{stage}.blocks.{index}"
            encoder_block(loader, layer.encoder_block, prefix, BLOCK)
            loader.assign(layer.relative_position_bias_table,
                          f"{prefix}.attention.self.relative_position_bias_table")
        if stage < len(backbone.depths) - 1:
            merging = backbone.get_layer(f"stage_{stage}_merging")
            dense(loader, merging.reduction, f"encoder.layers.{stage}.downsample.reduction")
            norm(loader, merging.norm, f"encoder.layers.{stage}.downsample.norm")
    norm(loader, backbone.get_layer("final_norm"), "layernorm")


def read_backbone(cls, path, dtype=None, **overrides):
    """(backbone, loader): a `cls` with the checkpoint's weights; `classifier.*` unread."""
    config, weights = read_checkpoint(path)
    backbone = cls(**{**backbone_kwargs(config), **overrides}, dtype=dtype)
    # The mask token serves masked-image pretraining, which these models do not do.
    loader = WeightLoader(weights, prefixes=("swin.",), ignore=(r"embeddings\.mask_token",))
    assign_weights(backbone, loader)
    return backbone, loader


def load_backbone(cls, path, dtype=None, **overrides):
    """A `cls` with the checkpoint's weights (`Backbone.from_huggingface`); head ignored."""
    backbone, loader = read_backbone(cls, path, dtype, **overrides)
    loader.finish(ignore=(r"classifier\..*",))
    return backbone
