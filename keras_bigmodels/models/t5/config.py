"""T5 presets (T5 v1.0, T5 v1.1, Flan-T5, mT5) and their analytic parameter counter.

Counts never allocate a model: `keras_bigmodels.flops.count_params("mt5-base")` reads the
config below. Conventions are Hugging Face's `T5ForConditionalGeneration`: the token table
is shared by encoder, decoder and (v1.0) the output layer and counted once; each stack
has one relative-position table (its first layer's); v1.1, Flan-T5 and mT5 add an untied
[vocabulary, hidden] output table.
"""

from keras_bigmodels.flops import attention_params, feedforward_params
from keras_bigmodels.presets import register_presets

T5_SOURCE = ("Raffel et al. 2020, Exploring the Limits of Transfer Learning with a Unified "
             "Text-to-Text Transformer, Sec. 3.7 and the released {} config.json")
T5_V1_1_SOURCE = ("T5 v1.1 (google-research/text-to-text-transfer-transformer "
                  "released_checkpoints.md: GEGLU, no dropout in pre-training, untied "
                  "output layer) and the released google/{} config.json")
FLAN_SOURCE = ("Chung et al. 2022, Scaling Instruction-Finetuned Language Models (Flan-T5, "
               "T5 v1.1 architecture) and the released google/{} config.json")
MT5_SOURCE = ("Xue et al. 2021, mT5: A Massively Multilingual Pre-trained Text-to-Text "
              "Transformer (T5 v1.1 architecture, 250,112-token vocabulary) and the "
              "released google/{} config.json")

T5_VOCABULARY_SIZE = 32128  # 32,000 SentencePiece pieces + 100 sentinels, padded to 128
MT5_VOCABULARY_SIZE = 250112


def _t5(num_layers, hidden_dim, num_heads, intermediate_dim, source):
    """T5 v1.0: ReLU feed-forward, output layer tied to the token table."""
    return {
        "vocabulary_size": T5_VOCABULARY_SIZE,
        "num_layers": num_layers,
        "num_decoder_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": intermediate_dim,
        "key_dim": 64,
        "activation": "relu",
        "gated": False,
        "tie_embeddings": True,
        "dropout": 0.1,
        "source": source,
    }


def _t5_v1_1(num_layers, hidden_dim, num_heads, intermediate_dim, source,
             vocabulary_size=T5_VOCABULARY_SIZE):
    """T5 v1.1 / Flan-T5 / mT5: gated-GELU (tanh approximation), untied output layer."""
    return {
        **_t5(num_layers, hidden_dim, num_heads, intermediate_dim, source),
        "vocabulary_size": vocabulary_size,
        "activation": "gelu_approximate",
        "gated": True,
        "tie_embeddings": False,
    }


PRESETS = {
    "t5-small": _t5(6, 512, 8, 2048, T5_SOURCE.format("t5-small")),
    "t5-base": _t5(12, 768, 12, 3072, T5_SOURCE.format("t5-base")),
    "t5-large": _t5(24, 1024, 16, 4096, T5_SOURCE.format("t5-large")),
    "t5-v1_1-small": _t5_v1_1(8, 512, 6, 1024, T5_V1_1_SOURCE.format("t5-v1_1-small")),
    "t5-v1_1-base": _t5_v1_1(12, 768, 12, 2048, T5_V1_1_SOURCE.format("t5-v1_1-base")),
    "flan-t5-small": _t5_v1_1(8, 512, 6, 1024, FLAN_SOURCE.format("flan-t5-small")),
    "flan-t5-base": _t5_v1_1(12, 768, 12, 2048, FLAN_SOURCE.format("flan-t5-base")),
    "mt5-small": _t5_v1_1(8, 512, 6, 1024, MT5_SOURCE.format("mt5-small"),
                          vocabulary_size=MT5_VOCABULARY_SIZE),
    "mt5-base": _t5_v1_1(12, 768, 12, 2048, MT5_SOURCE.format("mt5-base"),
                         vocabulary_size=MT5_VOCABULARY_SIZE),
}


def count_t5_params(config):
    """Parameters of a T5 config dict, exactly as `T5Backbone(**config).count_params()`."""
    hidden = config["hidden_dim"]
    heads = config["num_heads"]
    key_dim = config.get("key_dim") or hidden // heads
    buckets = config.get("relative_attention_num_buckets") or 32
    gated = bool(config.get("gated", False))
    attention = attention_params(hidden, heads, key_dim, use_bias=False)
    feedforward = feedforward_params(hidden, config["intermediate_dim"], gated, use_bias=False)
    # RMS norms have a scale and no bias: `hidden` each.
    encoder_layer = attention + feedforward + 2 * hidden
    decoder_layer = 2 * attention + feedforward + 3 * hidden
    stack_extras = buckets * heads + hidden  # relative-position table + final norm

    total = config["vocabulary_size"] * hidden
    total += config["num_layers"] * encoder_layer + stack_extras
    if not config.get("encoder_only", False):
        num_decoder_layers = config.get("num_decoder_layers") or config["num_layers"]
        total += num_decoder_layers * decoder_layer + stack_extras
        if not config.get("tie_embeddings", True):
            total += config["vocabulary_size"] * hidden
    return total


register_presets("t5", PRESETS, param_counter=count_t5_params)
