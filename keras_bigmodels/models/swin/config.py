"""Swin Transformer presets (Liu et al. 2021, Section 3.3: Swin-T/S/B)."""

from keras_bigmodels.presets import register_presets

SOURCE = "Liu et al. 2021, Swin Transformer, Section 3.3 (architecture variants)"

# name: (hidden_dim C, depths, num_heads)
SIZES = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}

SWIN_PRESETS = {
    f"swin-{size}-patch4-window7-224": {
        "image_size": 224,
        "patch_size": 4,
        "hidden_dim": hidden_dim,
        "depths": list(depths),
        "num_heads": list(heads),
        "window_size": 7,
        "mlp_ratio": 4.0,
        "source": SOURCE,
    }
    for size, (hidden_dim, depths, heads) in SIZES.items()
}


def swin_params(config):
    """Analytic parameter count of a SwinBackbone config (plus a `num_classes` head if given).

    Patch projection and its norm, per block: attention, feed-forward, two norms and the
    (2w-1)^2 x heads relative position table; per merging: norm(4C) and a bias-free
    4C -> 2C reduction; the final norm.
    """
    patch = config.get("patch_size", 4)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    d = config["hidden_dim"]
    window = config.get("window_size", 7)
    channels = config.get("num_channels", 3)
    total = channels * patch[0] * patch[1] * d + d + 2 * d
    depths, heads = config["depths"], config["num_heads"]
    for stage, (depth, num_heads) in enumerate(zip(depths, heads)):
        f = int(config.get("mlp_ratio", 4.0) * d)
        block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        block += (2 * window - 1) ** 2 * num_heads
        total += depth * block
        if stage < len(depths) - 1:
            total += 2 * 4 * d + 4 * d * 2 * d
            d *= 2
    total += 2 * d
    if config.get("num_classes"):
        total += d * config["num_classes"] + config["num_classes"]
    return total


register_presets("swin", SWIN_PRESETS, param_counter=swin_params)
