"""CLIP presets (Radford et al. 2021) and their analytic parameter count.

OpenAI's released ViT models, with the sizes of their published `config.json`s
(openai/clip-vit-*): a 12-layer text Transformer (width 512, 8 heads; 768 and 12 heads
for ViT-L/14), 49,408 BPE tokens, 77 positions, quick-GELU everywhere, LayerNorm
epsilon 1e-5. The counts equal transformers' `CLIPModel` for those configs.
"""

from keras_bigmodels.flops import register_flops_counter, stack_flops
from keras_bigmodels.presets import register_presets

SOURCE = ("Radford et al. 2021, Learning Transferable Visual Models From Natural Language "
          "Supervision, Table 20; sizes of OpenAI's released checkpoints (openai/{name})")

# name: (patch, vision width, layers, heads, text width, text heads, projection)
SIZES = {
    "clip-vit-base-patch32": (32, 768, 12, 12, 512, 8, 512),
    "clip-vit-base-patch16": (16, 768, 12, 12, 512, 8, 512),
    "clip-vit-large-patch14": (14, 1024, 24, 16, 768, 12, 768),
}


def _preset(name):
    patch, width, layers, heads, text_width, text_heads, projection = SIZES[name]
    return {
        "image_size": 224,
        "patch_size": patch,
        "vision_num_layers": layers,
        "vision_num_heads": heads,
        "vision_hidden_dim": width,
        "vision_intermediate_dim": 4 * width,
        "vocabulary_size": 49408,
        "max_sequence_length": 77,
        "text_num_layers": 12,
        "text_num_heads": text_heads,
        "text_hidden_dim": text_width,
        "text_intermediate_dim": 4 * text_width,
        "projection_dim": projection,
        "source": SOURCE.format(name=name),
    }


CLIP_PRESETS = {name: _preset(name) for name in SIZES}

# The constructor kwargs of each tower inside a flat `CLIPBackbone` config: our name ->
# the tower's kwarg. Presets and `from_huggingface` speak the flat names.
VISION_KEYS = {
    "image_size": "image_size", "patch_size": "patch_size", "num_channels": "num_channels",
    "vision_num_layers": "num_layers", "vision_num_heads": "num_heads",
    "vision_hidden_dim": "hidden_dim", "vision_intermediate_dim": "intermediate_dim",
    "vision_activation": "activation",
}
TEXT_KEYS = {
    "vocabulary_size": "vocabulary_size", "max_sequence_length": "max_sequence_length",
    "text_num_layers": "num_layers", "text_num_heads": "num_heads",
    "text_hidden_dim": "hidden_dim", "text_intermediate_dim": "intermediate_dim",
    "text_activation": "activation", "eos_token_id": "eos_token_id",
}
SHARED_KEYS = ("layer_norm_epsilon", "dropout", "attention_dropout", "use_fused_attention")


def tower_kwargs(config, keys):
    """A tower's constructor kwargs from a flat CLIP config (preset or backbone config)."""
    kwargs = {keys[k]: v for k, v in config.items() if k in keys}
    kwargs.update({k: v for k, v in config.items() if k in SHARED_KEYS})
    return kwargs


def _block(width, intermediate):
    """A pre-norm block: four biased projections, the two feed-forward Dense, two norms."""
    return 4 * (width * width + width) + 2 * width * intermediate + intermediate + width \
        + 4 * width


def vision_params(config):
    """Parameters of a `CLIPVisionEncoder` from its own kwargs (defaults as its constructor)."""
    image = config.get("image_size", 224)
    image = (image, image) if isinstance(image, int) else tuple(image)
    patch = config.get("patch_size", 32)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    width = config.get("hidden_dim", 768)
    patches = (image[0] // patch[0]) * (image[1] // patch[1])
    total = config.get("num_channels", 3) * patch[0] * patch[1] * width  # no bias
    total += width + (patches + 1) * width  # class token, positions
    total += 2 * width  # pre-layernorm
    total += config.get("num_layers", 12) * _block(width, config.get("intermediate_dim", 3072))
    return total + 2 * width  # post-layernorm


def text_params(config):
    """Parameters of a `CLIPTextEncoder` from its own kwargs (defaults as its constructor)."""
    width = config.get("hidden_dim", 512)
    total = (config.get("vocabulary_size", 49408) + config.get("max_sequence_length", 77)) * width
    total += config.get("num_layers", 12) * _block(width, config.get("intermediate_dim", 2048))
    return total + 2 * width  # final layernorm


def clip_params(config):
    """Analytic parameter count of a `CLIPBackbone` config (flat kwargs, as the presets).

    Both towers, the two bias-free projections and the log temperature.
    """
    vision = tower_kwargs(config, VISION_KEYS)
    text = tower_kwargs(config, TEXT_KEYS)
    projection = config.get("projection_dim", 512)
    return (vision_params(vision) + text_params(text)
            + (vision.get("hidden_dim", 768) + text.get("hidden_dim", 512)) * projection + 1)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def clip_training_flops(config, sequence_length):
    """(training FLOPs, tokens) of one image-text pair through a `CLIPBackbone` config.

    `sequence_length` is the text length (77 for OpenAI's tokenizer); the image gives
    (H/p)(W/p) patches + 1 class tokens. Counted: 6 per matmul weight (kernels; tables,
    biases and norms are not matmuls) per token it touches -- the patch projection on the
    patches, each tower's blocks on its tokens, each projection on its one pooled
    vector -- and the attention products of each tower. Not counted: the batch x batch
    similarity matmul (2 * batch * projection_dim per pair forward, depends on the batch).

    Example:
    >>> flops, tokens = clip_training_flops(CLIP_PRESETS["clip-vit-base-patch32"], 77)
    >>> tokens   # 50 image tokens + 77 text tokens
    127
    """
    text_length = config.get("max_sequence_length", 77)
    if (isinstance(sequence_length, bool) or not isinstance(sequence_length, int)
            or not 0 < sequence_length <= text_length):
        raise ValueError(f"`sequence_length` (the text length) must be an int in [1, "
                         f"{text_length}] (max_sequence_length); received {sequence_length!r}.")
    vision = tower_kwargs(config, VISION_KEYS)
    text = tower_kwargs(config, TEXT_KEYS)
    image, patch = _pair(vision.get("image_size", 224)), _pair(vision.get("patch_size", 32))
    patches = (image[0] // patch[0]) * (image[1] // patch[1])
    width, text_width = vision.get("hidden_dim", 768), text.get("hidden_dim", 512)
    block = 4 * width * width + 2 * width * vision.get("intermediate_dim", 3072)
    text_block = 4 * text_width * text_width + 2 * text_width * text.get("intermediate_dim", 2048)
    vision_layers, text_layers = vision.get("num_layers", 12), text.get("num_layers", 12)
    patch_projection = vision.get("num_channels", 3) * patch[0] * patch[1] * width
    projection = config.get("projection_dim", 512)
    flops = (6 * patch_projection * patches
             + stack_flops(vision_layers * block, vision_layers, width, patches + 1)
             + stack_flops(text_layers * text_block, text_layers, text_width, sequence_length)
             + 6 * (width + text_width) * projection)
    return flops, patches + 1 + sequence_length


register_presets("clip", CLIP_PRESETS, param_counter=clip_params)
register_flops_counter("clip", clip_training_flops)
