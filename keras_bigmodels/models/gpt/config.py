"""GPT presets (GPT-1, GPT-2, GPT-3) and their analytic parameter counter.

Counts never allocate a model: `keras_bigmodels.flops.count_params("gpt3-175b")` reads
the config below. Token embeddings are tied to the output layer and counted once.
"""

from keras_bigmodels.flops import transformer_params
from keras_bigmodels.presets import register_presets

GPT1_SOURCE = "Radford et al. 2018, Improving Language Understanding by Generative Pre-Training, Sec. 4.1"
GPT2_SOURCE = "Radford et al. 2019, Language Models are Unsupervised Multitask Learners, Table 2"
GPT3_SOURCE = "Brown et al. 2020, Language Models are Few-Shot Learners, Table 2.1"

# GPT-3's paper does not give the width of its locally banded attention layers; 256 is
# the Sparse Transformer's local block size (Child et al. 2019), which it cites.
GPT3_LOCAL_ATTENTION_WINDOW = 256


def _gpt2(num_layers, hidden_dim, num_heads):
    return {
        "vocabulary_size": 50257,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "max_sequence_length": 1024,
        "normalize_first": True,
        "source": GPT2_SOURCE,
    }


# name: (num_layers, d_model, num_heads, d_head) from Table 2.1.
GPT3_SIZES = {
    "gpt3-small": (12, 768, 12, 64),
    "gpt3-medium": (24, 1024, 16, 64),
    "gpt3-large": (24, 1536, 16, 96),
    # Table 2.1 says 24 heads of 128, but 24 * 128 = 3072 != d_model 2048. Heads x d_head
    # must equal d_model for the stated 1.3B parameters, so this uses 16 heads of 128.
    "gpt3-xl": (24, 2048, 16, 128),
    "gpt3-2.7b": (32, 2560, 32, 80),
    "gpt3-6.7b": (32, 4096, 32, 128),
    # Table 2.1 says d_model 5140, but 40 heads x d_head 128 = 5120 (and 5140 is not
    # divisible by 40): 5120 is the width that is consistent with the heads and with 13B.
    "gpt3-13b": (40, 5120, 40, 128),
    "gpt3-175b": (96, 12288, 96, 128),
}

# The rounded sizes the paper reports, for the 2% check.
GPT3_PAPER_PARAMS = {
    "gpt3-small": 125e6,
    "gpt3-medium": 350e6,
    "gpt3-large": 760e6,
    "gpt3-xl": 1.3e9,
    "gpt3-2.7b": 2.7e9,
    "gpt3-6.7b": 6.7e9,
    "gpt3-13b": 13e9,
    "gpt3-175b": 175e9,
}


def _gpt3(name):
    num_layers, hidden_dim, num_heads, head_dim = GPT3_SIZES[name]
    assert num_heads * head_dim == hidden_dim, name
    return {
        "vocabulary_size": 50257,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "max_sequence_length": 2048,
        "normalize_first": True,
        "local_attention_window": GPT3_LOCAL_ATTENTION_WINDOW,
        "source": GPT3_SOURCE + (
            "; see the comment in config.py on Table 2.1's inconsistent entry"
            if name in ("gpt3-xl", "gpt3-13b") else ""
        ),
    }


PRESETS = {
    # GPT-1: post-norm blocks, no final layer norm, 40,478 BPE tokens, 512 positions.
    "gpt1": {
        "vocabulary_size": 40478,
        "num_layers": 12,
        "num_heads": 12,
        "hidden_dim": 768,
        "intermediate_dim": 3072,
        "max_sequence_length": 512,
        "normalize_first": False,
        "source": GPT1_SOURCE,
    },
    "gpt2-small": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25),
    **{name: _gpt3(name) for name in GPT3_SIZES},
}


def count_gpt_params(config):
    """Parameters of a GPT config dict, exactly as `GPTBackbone(**config).count_params()`."""
    normalize_first = config.get("normalize_first", True)
    return transformer_params({
        **config,
        "position": "learned",
        "embedding_layer_norm": False,
        "final_norm": normalize_first if normalize_first is not None else True,
        "tie_embeddings": True,
        "use_bias": True,
        "gated": False,
        "norm": "layer_norm",
        "num_segments": 0,
        "embedding_dim": None,
    })


register_presets("gpt", PRESETS, param_counter=count_gpt_params)
