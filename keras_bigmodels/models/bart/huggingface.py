"""BART weights from a local Hugging Face `BartForConditionalGeneration` directory.

Name tables only; the shared helpers of `keras_bigmodels.checkpoints` do the re-layout.
HF's projections are nn.Linear, [out, in]: every kernel is transposed, and attention
kernels are then reshaped into heads ([hidden, heads, head_dim] for query/key/value,
[heads, head_dim, hidden] for the output). The token table may be saved as
`model.shared.weight` or under the embed_tokens / lm_head names tied to it; the position
tables keep their 2 offset rows, as ours do; `final_logits_bias` is saved as [1, vocab].
"""


import numpy as np

from keras_bigmodels.checkpoints import (WeightLoader, activation, attention, check_model_type,
                                         encoder_block, norm, read_checkpoint)

TOKEN_TABLE_NAMES = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                     "model.decoder.embed_tokens.weight", "lm_head.weight",
                     # BartModel (no task prefix, no head)
                     "shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# HF's BART block module names, in `ENCODER_BLOCK_PARTS` order.
BLOCK_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")


def backbone_kwargs(config):
    """BartBackbone kwargs of an HF BartConfig dict (model_type "bart")."""
    check_model_type(config, ("bart",), "BartSeq2SeqLM.from_huggingface")
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
        "activation": activation(config, "activation_function", default="gelu"),
        "dropout": config.get("dropout", 0.1),
        "attention_dropout": config.get("attention_dropout", 0.0),
        "scale_embedding": bool(config.get("scale_embedding", False)),
        "initializer_range": config.get("init_std", 0.02),
    }


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
    # The tied copies of the table (whichever were saved) are checked equal above.
    loader = WeightLoader(weights, prefixes=prefixes,
                          ignore=(r"(encoder|decoder)\.embed_tokens\.weight",
                                  r"lm_head\.weight", r"shared\.weight"))
    table_name = tables[0][0]
    if prefixes and table_name.startswith("model."):
        table_name = table_name[len("model."):]
    loader.assign(backbone.token_embedding.embeddings, table_name)
    if "final_logits_bias" in loader:
        loader.assign(backbone.final_logits_bias.bias, "final_logits_bias", reshape=True)
    for stack, embedding, layers in (("encoder", backbone.encoder_embedding,
                                      backbone.encoder_layers),
                                     ("decoder", backbone.decoder_embedding,
                                      backbone.decoder_layers)):
        loader.assign(embedding.position_embedding.embeddings, f"{stack}.embed_positions.weight")
        norm(loader, embedding.embedding_norm, f"{stack}.layernorm_embedding")
        for i, block in enumerate(layers):
            prefix = f"{stack}.layers.{i}"
            encoder_block(loader, block, prefix, BLOCK_NAMES)
            if stack == "decoder":
                attention(loader, block.cross_attention,
                          *(f"{prefix}.encoder_attn.{p}_proj" for p in ("q", "k", "v", "out")))
                norm(loader, block.cross_attention_norm, f"{prefix}.encoder_attn_layer_norm")
    loader.finish()


def load_backbone(cls, path, dtype=None, **overrides):
    """A `BartBackbone` with the weights of a local HF BART checkpoint directory."""
    config, weights = read_checkpoint(path)
    backbone = cls(**{**backbone_kwargs(config), **overrides}, dtype=dtype)
    load_weights(backbone, weights)
    return backbone


def generation_ids(config):
    """The decoder start, end and padding ids of an HF BART config (2, 2, 1 by default)."""
    return {"decoder_start_token_id": config.get("decoder_start_token_id", 2),
            "eos_token_id": config.get("eos_token_id", 2),
            "pad_token_id": config.get("pad_token_id", 1)}
