"""Weight mapping from local HF ViT checkpoints (ViTModel, ViTForImageClassification)."""

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate", "gelu_pytorch_tanh":
               "gelu_approximate", "relu": "relu", "silu": "silu", "swish": "silu"}


def vit_config_from_hf(config):
    """Our ViTBackbone kwargs from an HF ViTConfig dict."""
    if not config.get("qkv_bias", True):
        raise ValueError("ViT checkpoints without query/key/value biases (qkv_bias=False) are "
                         "not supported.")
    activation = config.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unsupported `hidden_act` {activation!r} in the checkpoint; supported: "
                         f"{', '.join(ACTIVATIONS)}.")
    return {
        "image_size": config.get("image_size", 224),
        "patch_size": config.get("patch_size", 16),
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "num_channels": config.get("num_channels", 3),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12),
        "activation": ACTIVATIONS[activation],
    }


def dense(loader, layer, name):
    """nn.Linear [out, in] -> Dense/EinsumDense kernels (reshaped to the head layout)."""
    loader.assign(layer.kernel, f"{name}.weight", lambda w: w.T)
    if getattr(layer, "bias", None) is not None:
        loader.assign(layer.bias, f"{name}.bias")


def norm(loader, layer, name):
    loader.assign(layer.gamma, f"{name}.weight")
    loader.assign(layer.beta, f"{name}.bias")


def conv(loader, layer, name):
    """nn.Conv2d [out, in, kh, kw] -> Conv2D [kh, kw, in, out]."""
    loader.assign(layer.kernel, f"{name}.weight", lambda w: np.transpose(w, (2, 3, 1, 0)))
    loader.assign(layer.bias, f"{name}.bias")


def encoder_block(loader, block, prefix, attention="attention.attention",
                  attention_output="attention.output.dense"):
    """An HF BERT-style pre-norm layer (ViT, Swin) onto a TransformerEncoderBlock."""
    attn = block.self_attention
    for ours, theirs in (("query_dense", "query"), ("key_dense", "key"),
                         ("value_dense", "value")):
        dense(loader, getattr(attn, ours), f"{prefix}.{attention}.{theirs}")
    dense(loader, attn.output_dense, f"{prefix}.{attention_output}")
    norm(loader, block.self_attention_norm, f"{prefix}.layernorm_before")
    norm(loader, block.feedforward_norm, f"{prefix}.layernorm_after")
    dense(loader, block.feedforward.intermediate, f"{prefix}.intermediate.dense")
    dense(loader, block.feedforward.output_dense, f"{prefix}.output.dense")


def assign_vit(backbone, loader):
    embedding = backbone.get_layer("embedding")
    loader.assign(embedding.cls_token, "embeddings.cls_token")
    loader.assign(embedding.position_embedding.embeddings, "embeddings.position_embeddings")
    conv(loader, embedding.patch_embedding.patch_projection,
         "embeddings.patch_embeddings.projection")
    for i in range(backbone.num_layers):
        encoder_block(loader, backbone.get_layer(f"transformer_layer_{i}"), f"encoder.layer.{i}")
    norm(loader, backbone.get_layer("final_norm"), "layernorm")
    if backbone.use_pooler:
        dense(loader, backbone.get_layer("pooler"), "pooler.dense")


def load_vit_backbone(cls, path, image_size=None, ignore=(), **overrides):
    config, weights = read_checkpoint(path)
    kwargs = vit_config_from_hf(config)
    kwargs["use_pooler"] = "pooler.dense.weight" in weights or "vit.pooler.dense.weight" in weights
    kwargs.update(overrides)
    backbone = cls(**kwargs)
    loader = WeightLoader(weights, prefixes=("vit.",),
                          ignore=(r"classifier\..*", r"embeddings\.mask_token", *ignore))
    assign_vit(backbone, loader)
    loader.finish()
    if image_size is not None:
        backbone = backbone.with_image_size(image_size)
    return backbone, config, loader
