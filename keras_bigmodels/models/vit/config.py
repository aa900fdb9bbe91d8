"""ViT presets from one size table (Dosovitskiy et al. 2021, Table 1; Ti/S from DeiT)."""

from keras_bigmodels.presets import register_presets

SOURCE = "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words, Table 1"

# name: (hidden_dim, num_layers, num_heads, intermediate_dim, patch_size)
SIZES = {
    "tiny": (192, 12, 3, 768, 16),
    "small": (384, 12, 6, 1536, 16),
    "base": (768, 12, 12, 3072, 16),
    "large": (1024, 24, 16, 4096, 16),
    "huge": (1280, 32, 16, 5120, 14),
}


def _preset(size):
    hidden_dim, num_layers, num_heads, intermediate_dim, patch_size = SIZES[size]
    source = SOURCE if size not in ("tiny", "small") else (
        "Touvron et al. 2021, DeiT, Table 1 (ViT-Ti/S sizes)"
    )
    return {
        "image_size": 224,
        "patch_size": patch_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": intermediate_dim,
        "source": source,
    }


VIT_PRESETS = {
    f"vit-{size}-patch{SIZES[size][4]}-224": _preset(size) for size in SIZES
}


def vit_params(config):
    """Analytic parameter count of a ViTBackbone config (plus `num_classes` head if given).

    Counts the patch projection, [CLS] token, position table, blocks and final norm;
    HF's tanh pooler only with `use_pooler=True`.
    """
    image = config.get("image_size", 224)
    image = (image, image) if isinstance(image, int) else tuple(image)
    patch = config.get("patch_size", 16)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    d = config["hidden_dim"]
    f = config["intermediate_dim"]
    channels = config.get("num_channels", 3)
    num_patches = (image[0] // patch[0]) * (image[1] // patch[1])
    total = channels * patch[0] * patch[1] * d + d  # patch projection
    total += d + (num_patches + 1) * d  # [CLS] token and positions
    block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
    total += config["num_layers"] * block + 2 * d
    if config.get("use_pooler"):
        total += d * d + d
    if config.get("num_classes"):
        total += d * config["num_classes"] + config["num_classes"]
    return total


register_presets("vit", VIT_PRESETS, param_counter=vit_params)
