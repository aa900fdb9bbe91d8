"""Weight mapping from local HF Swin checkpoints (SwinModel, SwinForImageClassification)."""

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate", "relu": "relu", "silu": "silu",
               "swish": "silu"}


def swin_config_from_hf(config):
    """Our SwinBackbone kwargs from an HF SwinConfig dict."""
    if config.get("use_absolute_embeddings", False):
        raise ValueError("Swin checkpoints with absolute position embeddings "
                         "(use_absolute_embeddings=True) are not supported.")
    if not config.get("qkv_bias", True):
        raise ValueError("Swin checkpoints without query/key/value biases are not supported.")
    activation = config.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unsupported `hidden_act` {activation!r}; supported: "
                         f"{', '.join(ACTIVATIONS)}.")
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
        "activation": ACTIVATIONS[activation],
    }


def _dense(loader, layer, name):
    loader.assign(layer.kernel, f"{name}.weight", lambda w: w.T)
    if getattr(layer, "bias", None) is not None:
        loader.assign(layer.bias, f"{name}.bias")


def _norm(loader, layer, name):
    loader.assign(layer.gamma, f"{name}.weight")
    loader.assign(layer.beta, f"{name}.bias")


def assign_swin(backbone, loader):
    projection = backbone.get_layer("patch_embedding").patch_projection
    name = "embeddings.patch_embeddings.projection"
    loader.assign(projection.kernel, f"{name}.weight", lambda w: np.transpose(w, (2, 3, 1, 0)))
    loader.assign(projection.bias, f"{name}.bias")
    _norm(loader, backbone.get_layer("embedding_norm"), "embeddings.norm")
    for s, depth in enumerate(backbone.depths):
        for b in range(depth):
            layer = backbone.get_layer(f"stage_{s}_block_{b}")
            block = layer.encoder_block
            prefix = f"encoder.layers.{s}.blocks.{b}"
            attn = block.self_attention
            for ours, theirs in (("query_dense", "query"), ("key_dense", "key"),
                                 ("value_dense", "value")):
                _dense(loader, getattr(attn, ours), f"{prefix}.attention.self.{theirs}")
            _dense(loader, attn.output_dense, f"{prefix}.attention.output.dense")
            loader.assign(layer.relative_position_bias_table,
                          f"{prefix}.attention.self.relative_position_bias_table")
            _norm(loader, block.self_attention_norm, f"{prefix}.layernorm_before")
            _norm(loader, block.feedforward_norm, f"{prefix}.layernorm_after")
            _dense(loader, block.feedforward.intermediate, f"{prefix}.intermediate.dense")
            _dense(loader, block.feedforward.output_dense, f"{prefix}.output.dense")
        if s < len(backbone.depths) - 1:
            merging = backbone.get_layer(f"stage_{s}_merging")
            _dense(loader, merging.reduction, f"encoder.layers.{s}.downsample.reduction")
            _norm(loader, merging.norm, f"encoder.layers.{s}.downsample.norm")
    _norm(loader, backbone.get_layer("final_norm"), "layernorm")


def load_swin_backbone(cls, path, **overrides):
    config, weights = read_checkpoint(path)
    kwargs = swin_config_from_hf(config)
    kwargs.update(overrides)
    backbone = cls(**kwargs)
    loader = WeightLoader(weights, prefixes=("swin.",),
                          ignore=(r"classifier\..*", r"embeddings\.mask_token"))
    assign_swin(backbone, loader)
    loader.finish()
    return backbone, config, loader
