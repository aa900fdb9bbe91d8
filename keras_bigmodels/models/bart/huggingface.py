"""BART weights from a local Hugging Face `BartForConditionalGeneration` directory.

Weight-name mapping only. HF's projections are nn.Linear, [out, in]: every kernel is
transposed, and attention kernels are then split into heads ([hidden, heads, head_dim] for
query/key/value, [heads, head_dim, hidden] for the output). The token table may be saved
as `model.shared.weight` or under the embed_tokens / lm_head names it is tied to; the
position tables keep their 2 offset rows, as ours do.
"""

import os

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

# HF activation names -> ours; BART's "gelu" is the exact erf form.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate",
               "gelu_pytorch_tanh": "gelu_approximate", "relu": "relu", "silu": "silu",
               "swish": "silu", "tanh": "tanh"}
TOKEN_TABLE_NAMES = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                     "model.decoder.embed_tokens.weight", "lm_head.weight")


def backbone_kwargs(config):
    """BartBackbone kwargs of an HF BartConfig dict (model_type "bart")."""
    model_type = config.get("model_type")
    if model_type != "bart":
        raise ValueError(f"Unsupported model_type {model_type!r} in config.json; "
                         "BartSeq2SeqLM.from_huggingface reads 'bart' "
                         "(BartForConditionalGeneration) checkpoints.")
    for ours, (encoder_key, decoder_key) in (
            ("num_heads", ("encoder_attention_heads", "decoder_attention_heads")),
            ("intermediate_dim", ("encoder_ffn_dim", "decoder_ffn_dim"))):
        if config[encoder_key] != config[decoder_key]:
            raise ValueError(f"BartBackbone uses one `{ours}` for both stacks; the checkpoint "
                             f"has {encoder_key}={config[encoder_key]} and "
                             f"{decoder_key}={config[decoder_key]}.")
    if config.get("add_final_layer_norm") or config.get("normalize_before"):
        raise ValueError("Pre-norm BART variants (add_final_layer_norm / normalize_before, "
                         "as mBART) are not supported by BartBackbone.")
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unsupported activation_function {activation!r}; known: "
                         f"{', '.join(ACTIVATIONS)}.")
    if config.get("tie_word_embeddings") is False:
        raise ValueError("BartBackbone ties its output layer to the token table; this "
                         "checkpoint has tie_word_embeddings=False.")
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["encoder_layers"],
        "num_decoder_layers": (config["decoder_layers"]
                               if config["decoder_layers"] != config["encoder_layers"] else None),
        "num_heads": config["encoder_attention_heads"],
        "hidden_dim": config["d_model"],
        "intermediate_dim": config["encoder_ffn_dim"],
        "max_sequence_length": config["max_position_embeddings"],
        "activation": ACTIVATIONS[activation],
        "dropout": config.get("dropout", 0.1),
        "attention_dropout": config.get("attention_dropout", 0.0),
        "scale_embedding": bool(config.get("scale_embedding", False)),
        "initializer_range": config.get("init_std", 0.02),
    }


def _transpose(array):
    return np.transpose(array)


def _assign_attention(loader, attention, prefix, heads, head_dim, hidden):
    # nn.Linear [out, in] -> [in, out], then split the out axis into heads.
    for dense, name in ((attention.query_dense, "q_proj"), (attention.key_dense, "k_proj"),
                        (attention.value_dense, "v_proj")):
        loader.assign(dense.kernel, f"{prefix}.{name}.weight",
                      lambda w: _transpose(w).reshape(hidden, heads, head_dim))
        loader.assign(dense.bias, f"{prefix}.{name}.bias", lambda b: b.reshape(heads, head_dim))
    loader.assign(attention.output_dense.kernel, f"{prefix}.out_proj.weight",
                  lambda w: _transpose(w).reshape(heads, head_dim, hidden))
    loader.assign(attention.output_dense.bias, f"{prefix}.out_proj.bias")


def _assign_norm(loader, norm, prefix):
    loader.assign(norm.gamma, prefix + ".weight")
    loader.assign(norm.beta, prefix + ".bias")


def load_weights(backbone, weights):
    """Assign HF BartForConditionalGeneration (or BartModel) tensors to a `BartBackbone`."""
    tables = [(name, np.asarray(weights[name])) for name in TOKEN_TABLE_NAMES if name in weights]
    if not tables:
        raise ValueError("The checkpoint has no token table (model.shared.weight or its tied "
                         "names).")
    for name, table in tables[1:]:
        if not np.array_equal(table, tables[0][1]):
            raise ValueError(f"The checkpoint's `{name}` differs from `{tables[0][0]}`; "
                             "BartBackbone ties the encoder, decoder and output tables.")
    # Accept BartModel directories too (no "model." prefix, no head).
    prefixes = ("model.",) if any(n.startswith("model.") for n in weights) else ()
    loader = WeightLoader(weights, prefixes=prefixes,
                          ignore=(r"encoder\.embed_tokens\.weight", r"decoder\.embed_tokens\.weight",
                                  r"lm_head\.weight", r"shared\.weight"))
    heads, head_dim, hidden = backbone.num_heads, backbone.head_dim, backbone.hidden_dim
    table_name = tables[0][0]
    if prefixes and table_name.startswith("model."):
        table_name = table_name[len("model."):]
    loader.assign(backbone.token_embedding.embeddings, table_name)
    if "final_logits_bias" in loader:
        loader.assign(backbone.final_logits_bias.bias, "final_logits_bias",
                      lambda b: b.reshape(-1))  # saved as [1, vocabulary]
    for stack, embedding, layers in (("encoder", backbone.encoder_embedding,
                                      backbone.encoder_layers),
                                     ("decoder", backbone.decoder_embedding,
                                      backbone.decoder_layers)):
        loader.assign(embedding.position_embedding.embeddings, f"{stack}.embed_positions.weight")
        _assign_norm(loader, embedding.embedding_norm, f"{stack}.layernorm_embedding")
        for i, block in enumerate(layers):
            prefix = f"{stack}.layers.{i}"
            _assign_attention(loader, block.self_attention, prefix + ".self_attn", heads,
                              head_dim, hidden)
            _assign_norm(loader, block.self_attention_norm, prefix + ".self_attn_layer_norm")
            if stack == "decoder":
                _assign_attention(loader, block.cross_attention, prefix + ".encoder_attn", heads,
                                  head_dim, hidden)
                _assign_norm(loader, block.cross_attention_norm,
                             prefix + ".encoder_attn_layer_norm")
            loader.assign(block.feedforward.intermediate.kernel, prefix + ".fc1.weight",
                          _transpose)
            loader.assign(block.feedforward.intermediate.bias, prefix + ".fc1.bias")
            loader.assign(block.feedforward.output_dense.kernel, prefix + ".fc2.weight",
                          _transpose)
            loader.assign(block.feedforward.output_dense.bias, prefix + ".fc2.bias")
            _assign_norm(loader, block.feedforward_norm, prefix + ".final_layer_norm")
    loader.finish()


def load_bart_backbone(path, dtype=None, **overrides):
    """A `BartBackbone` with the weights of a local HF BART checkpoint directory."""
    from keras_bigmodels.models.bart.backbone import BartBackbone

    config, weights = read_checkpoint(path)
    backbone = BartBackbone(**{**backbone_kwargs(config), **overrides}, dtype=dtype)
    load_weights(backbone, weights)
    return backbone


def load_tokenizer(path):
    """The checkpoint's tokenizer.json as a `Tokenizer`, or None when there is none."""
    if os.path.isfile(os.path.join(os.fspath(path), "tokenizer.json")):
        from keras_bigmodels.tokenizers import Tokenizer

        return Tokenizer.from_dir(path)
    return None


def generation_ids(config):
    """(decoder_start, eos, pad) token ids of an HF BART config (2, 2, 1 by default)."""
    return (config.get("decoder_start_token_id", 2), config.get("eos_token_id", 2),
            config.get("pad_token_id", 1))
