"""BART presets (Lewis et al. 2020) and their analytic parameter counter.

Counting convention: the token table is shared by the encoder, the decoder and the tied
output layer and counted once; each stack has its own learned position table of
max_sequence_length + 2 rows (BART's offset of 2) and embedding layer norm; there is no
final layer norm. `final_logits_bias` ([vocabulary_size], zeros in the released
checkpoints) IS counted: it is a non-trainable weight of `BartBackbone`, while
transformers registers it as a buffer and leaves it out of its count. So bart-base is
transformers' 139,420,416 + 50,265 = 139,470,681, and its trainable parameters are exactly
transformers' 139,420,416.
"""

from keras_bigmodels.flops import block_params
from keras_bigmodels.presets import register_presets

BART_SOURCE = ("Lewis et al. 2020, BART: Denoising Sequence-to-Sequence Pre-training, Sec. 2.1 "
               "and 3.4; sizes as the released facebook/bart-base and facebook/bart-large")

# BART's learned position tables start at row 2 (fairseq reserved rows for padding).
POSITION_OFFSET = 2


def _bart(num_layers, hidden_dim, num_heads):
    return {
        "vocabulary_size": 50265,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "max_sequence_length": 1024,
        "source": BART_SOURCE,
    }


PRESETS = {
    # "the same number of layers as BERT-base / large" split between encoder and decoder:
    # 6 + 6 layers of width 768 and 12 + 12 of width 1024.
    "bart-base": _bart(6, 768, 12),
    "bart-large": _bart(12, 1024, 16),
}


def count_bart_params(config, include_final_logits_bias=True):
    """Parameters of a BART config dict, exactly as `BartBackbone(**config).count_params()`.

    `include_final_logits_bias=False` gives transformers' count (its bias is a buffer).

    Example:
    >>> count_bart_params(PRESETS["bart-base"], include_final_logits_bias=False)
    139420416
    """
    hidden, vocabulary = config["hidden_dim"], config["vocabulary_size"]
    block = {"hidden_dim": hidden, "num_heads": config["num_heads"],
             "intermediate_dim": config["intermediate_dim"], "key_dim": config.get("key_dim")}
    encoder_layers = config["num_layers"]
    decoder_layers = config.get("num_decoder_layers") or encoder_layers
    total = vocabulary * hidden
    total += 2 * (config.get("max_sequence_length", 1024) + POSITION_OFFSET) * hidden
    total += 2 * 2 * hidden  # the embedding layer norms of both stacks
    total += encoder_layers * block_params(block)
    total += decoder_layers * block_params(block, cross_attention=True)
    if include_final_logits_bias:
        total += vocabulary
    return total


register_presets("bart", PRESETS, param_counter=count_bart_params)
