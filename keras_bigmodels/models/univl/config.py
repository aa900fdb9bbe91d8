"""UniVL presets (Luo et al. 2020), their analytic parameter count and training FLOPs.

The paper's model (section 4.1 and microsoft/UniVL's scripts): a BERT-base text encoder
(`bert-base-uncased`, 12 layers), a 6-layer video encoder over S3D features of 1024
dims, a 2-layer cross encoder and a 3-layer decoder, all 768 wide with 12 heads and 3072
intermediate. The tables are sized as the reference code's configs: BERT's 512
positions (so `UniVLBackbone.from_text_encoder` takes `bert-base-uncased` as is), 512
frame positions (`visual-base/visual_config.json`), 512 + 512 = 1024 cross positions
(`cross-base/cross_config.json`) and 512 decoder positions
(`decoder-base/decoder_config.json`, `max_target_embeddings`). The paper trains with at
most 48 words and 64 frames (`--max_words 48 --max_frames 64`), well inside them.

Our backbone differs from the reference code in three stated places, which the count
reflects: the reference video encoder has a tanh pooler that no objective reads (we have
none: -590,592), its decoder reads BERT's position table (ours has its own: +393,216),
and it LayerNorms the raw 1024-dim features first (we project them directly: -2,048).
The reference backbone has 197,696,768 parameters; ours 197,497,344.
"""

from keras_bigmodels.flops import register_flops_counter, stack_flops
from keras_bigmodels.presets import register_presets

SOURCE = ("Luo et al. 2020, UniVL: A Unified Video and Language Pre-Training Model for "
          "Multimodal Understanding and Generation, section 4.1; table sizes of "
          "microsoft/UniVL's modules/{visual,cross,decoder}-base configs")

UNIVL_PRESETS = {
    "univl-base": {
        "vocabulary_size": 30522,
        "video_feature_dim": 1024,
        "num_text_layers": 12,
        "num_video_layers": 6,
        "num_cross_layers": 2,
        "num_decoder_layers": 3,
        "num_heads": 12,
        "hidden_dim": 768,
        "intermediate_dim": 3072,
        "max_sequence_length": 512,
        "max_frames": 512,
        "source": SOURCE,
    },
}

# UniVLBackbone's constructor defaults, for counting configs that leave them out.
DEFAULTS = dict(num_text_layers=12, num_video_layers=6, num_cross_layers=2,
                num_decoder_layers=3, hidden_dim=768, intermediate_dim=3072,
                max_sequence_length=48, max_frames=48)


def _sizes(config):
    return {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}


def _encoder_block(hidden, intermediate):
    """A post-norm block: four biased projections, the feed-forward pair, two norms."""
    return 4 * (hidden * hidden + hidden) + 2 * hidden * intermediate + intermediate \
        + hidden + 4 * hidden


def univl_params(config):
    """Exact `count_params()` of a `UniVLBackbone` config; never allocates.

    Example:
    >>> univl_params(UNIVL_PRESETS["univl-base"])
    197497344
    """
    c = _sizes(config)
    hidden, text_length, frames = c["hidden_dim"], c["max_sequence_length"], c["max_frames"]
    block = _encoder_block(hidden, c["intermediate_dim"])
    norm = 2 * hidden
    pooler = hidden * hidden + hidden
    # BERT: token, 2 segment and position tables, embedding norm, blocks, pooler.
    text = (c["vocabulary_size"] + 2 + text_length) * hidden + norm \
        + c["num_text_layers"] * block + pooler
    video = c["video_feature_dim"] * hidden + hidden + frames * hidden + norm \
        + c["num_video_layers"] * block
    # Cross: positions for the longest text then the frames, two type rows, a pooler.
    cross = (text_length + frames + 2) * hidden + norm + c["num_cross_layers"] * block + pooler
    # Decoder: token vectors are BERT's (tied); own positions; blocks with cross-attention.
    decoder_block = block + 4 * (hidden * hidden + hidden) + norm
    decoder = text_length * hidden + norm + c["num_decoder_layers"] * decoder_block
    return text + video + cross + decoder


def _lengths(config, sequence_length):
    c = _sizes(config)
    if isinstance(sequence_length, int) and not isinstance(sequence_length, bool):
        text, frames = sequence_length, sequence_length
    elif (isinstance(sequence_length, (tuple, list)) and len(sequence_length) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in sequence_length)):
        text, frames = sequence_length
    else:
        text, frames = None, None
    if text is None or not (0 < text <= c["max_sequence_length"]
                            and 0 < frames <= c["max_frames"]):
        raise ValueError(
            "`sequence_length` must be an int (text, caption and frames of that length) or "
            f"(text_length, num_frames), with text_length in [1, {c['max_sequence_length']}] "
            f"(max_sequence_length) and num_frames in [1, {c['max_frames']}] (max_frames); "
            f"received {sequence_length!r}.")
    return text, frames


def univl_training_flops(config, sequence_length):
    """(training FLOPs, tokens) of one video-text pair through a `UniVLBackbone` config.

    `sequence_length`: an int (text, caption and frames that long) or (text_length,
    num_frames); the caption is as long as the text. One pass of each Transformer:
    the text encoder on the text, the video encoder on the frames, the cross encoder on
    both, the decoder on the caption (its cross-attention keys and values on the cross
    encoder's outputs), plus the caption's output layer (the tied token table, as
    `flops_per_token` counts a tied table once). 6 per matmul weight (kernels) per token
    it touches, and the attention products. Pretraining reruns parts (clean and masked
    inputs, alignment negatives); multiply those parts for an exact step count.

    Example:
    >>> flops, tokens = univl_training_flops(UNIVL_PRESETS["univl-base"], (48, 64))
    >>> tokens   # text, frames, caption
    160
    """
    c = _sizes(config)
    text, frames = _lengths(c, sequence_length)
    hidden, intermediate = c["hidden_dim"], c["intermediate_dim"]
    joint = text + frames
    block = 4 * hidden * hidden + 2 * hidden * intermediate
    pooler = hidden * hidden
    flops = stack_flops(c["num_text_layers"] * block, c["num_text_layers"], hidden, text)
    flops += 6 * pooler  # BERT's pooler, on [CLS]
    flops += 6 * c["video_feature_dim"] * hidden * frames  # frame projection
    flops += stack_flops(c["num_video_layers"] * block, c["num_video_layers"], hidden, frames)
    flops += stack_flops(c["num_cross_layers"] * block, c["num_cross_layers"], hidden, joint)
    flops += 6 * pooler  # the cross pooler, on the first token
    layers = c["num_decoder_layers"]
    # Per decoder block: self-attention and feed-forward on the caption, the cross-attention
    # query and output on the caption, its key and value on the joint sequence.
    flops += stack_flops(layers * (block + 2 * hidden * hidden), layers, hidden, text)
    flops += 6 * layers * 2 * hidden * hidden * joint
    flops += 12 * layers * hidden * text * joint  # cross-attention QK^T and AV
    flops += 6 * c["vocabulary_size"] * hidden * text  # the tied output layer
    return flops, text + frames + text


register_presets("univl", UNIVL_PRESETS, param_counter=univl_params)
register_flops_counter("univl", univl_training_flops)
