"""T5, mT5 and Flan-T5 weights from a local Hugging Face checkpoint directory (no torch).

HF's T5 keeps one `shared` token table, `nn.Linear` weights as [out, in] (transposed
here to Keras' [in, out] and split into heads), the relative-position table in the first
block of each stack (`block.0.layer.0.SelfAttention.relative_attention_bias`), and
numbers the sub-layers of a block: encoder 0 self-attention, 1 feed-forward; decoder
0 self-attention, 1 cross-attention (`EncDecAttention`), 2 feed-forward. A gated
feed-forward has `wi_0` (through the activation) and `wi_1` (linear).

The output layer: a checkpoint with its own `lm_head.weight` (v1.1, Flan-T5, mT5) gets an
untied table; without one it is the token table. The d_model**-0.5 output scaling
follows `scale_decoder_outputs` (written by transformers >= 5) or else, as transformers
always did, `tie_word_embeddings` (True for T5 v1.0).
"""

import numpy as np

from keras_bigmodels.checkpoints import (
    WeightLoader,
    activation,
    attention,
    check_model_type,
    dense,
    embedding,
    norm,
    read_checkpoint,
)

# mT5 is T5 v1.1 with a larger vocabulary; umt5 (a per-layer position bias) is not read.
MODEL_TYPES = ("t5", "mt5")
READER = "T5Backbone/T5Seq2SeqLM.from_huggingface"


def _activation(config):
    """(activation, gated) of `feed_forward_proj`: "ACT" or "gated-ACT"."""
    projection = config.get("feed_forward_proj", "relu")
    parts = projection.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"Unsupported `feed_forward_proj` {projection!r} in config.json; "
                         "expected 'ACT' or 'gated-ACT' (e.g. 'relu', 'gated-gelu').")
    # transformers' own rule: "gated-gelu" means the tanh approximation (gelu_new).
    name = "gelu_new" if projection == "gated-gelu" else parts[-1]
    gated = len(parts) == 2
    return activation({**config, "feed_forward_proj": name}, "feed_forward_proj"), gated


def has_decoder(weights):
    return any(name.startswith("decoder.") for name in weights)


def untied_head(config, weights):
    """Whether the checkpoint's output layer is its own table (not the token table)."""
    head = weights.get("lm_head.weight")
    if head is None:
        return False
    if config.get("tie_word_embeddings", True) is not False and "shared.weight" in weights:
        # Older savers may write a tied head out; equal to the table it is still tied.
        return not np.array_equal(np.asarray(head), np.asarray(weights["shared.weight"]))
    return True


def backbone_kwargs(config, weights):
    """T5Backbone kwargs of an HF T5Config dict and its checkpoint's weight names."""
    check_model_type(config, MODEL_TYPES, READER)
    feedforward_activation, gated = _activation(config)
    encoder_only = not has_decoder(weights)
    scale = config.get("scale_decoder_outputs")
    if scale is None:
        scale = config.get("tie_word_embeddings", True) is not False
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["num_layers"],
        "num_heads": config["num_heads"],
        "hidden_dim": config["d_model"],
        "intermediate_dim": config["d_ff"],
        "key_dim": config.get("d_kv", 64),
        "num_decoder_layers": None if encoder_only else (
            config.get("num_decoder_layers") or config["num_layers"]),
        "activation": feedforward_activation,
        "gated": gated,
        "dropout": config.get("dropout_rate", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-6),
        "relative_attention_num_buckets": config.get("relative_attention_num_buckets", 32),
        "relative_attention_max_distance": config.get("relative_attention_max_distance", 128),
        "tie_embeddings": not untied_head(config, weights),
        "scale_decoder_output": bool(scale),
        "encoder_only": encoder_only,
    }


def _attention(loader, layer, prefix):
    attention(loader, layer, *(f"{prefix}.{name}" for name in "qkvo"))


def _feedforward(loader, feedforward, prefix, gated):
    if gated:  # act(wi_0 x) * (wi_1 x)
        dense(loader, feedforward.intermediate_gate, f"{prefix}.wi_0")
        dense(loader, feedforward.intermediate, f"{prefix}.wi_1")
    else:
        dense(loader, feedforward.intermediate, f"{prefix}.wi")
    dense(loader, feedforward.output_dense, f"{prefix}.wo")


def load_weights(backbone, weights):
    """Assign HF T5 tensors (by their HF names) to a `T5Backbone`."""
    ignore = [r"(encoder|decoder)\.embed_tokens\.weight"]  # copies of `shared`
    if backbone.encoder_only:
        ignore += [r"decoder\..*", r"lm_head\.weight"]  # a text encoder from a full model
    elif backbone.tie_embeddings:
        ignore.append(r"lm_head\.weight")  # checked equal to `shared` by `untied_head`
    loader = WeightLoader(weights, ignore=ignore)
    embedding(loader, backbone.token_embedding, "shared")
    stacks = [("encoder", backbone.encoder_layers, backbone.encoder_position_bias,
               backbone.encoder_final_norm)]
    if not backbone.encoder_only:
        stacks.append(("decoder", backbone.decoder_layers, backbone.decoder_position_bias,
                       backbone.decoder_final_norm))
    for stack, blocks, position_bias, final_norm in stacks:
        # [buckets, heads] in both.
        embedding(loader, position_bias,
                  f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias")
        for i, block in enumerate(blocks):
            prefix = f"{stack}.block.{i}.layer"
            _attention(loader, block.self_attention, f"{prefix}.0.SelfAttention")
            norm(loader, block.self_attention_norm, f"{prefix}.0.layer_norm")
            feedforward_index = 1
            if stack == "decoder":
                _attention(loader, block.cross_attention, f"{prefix}.1.EncDecAttention")
                norm(loader, block.cross_attention_norm, f"{prefix}.1.layer_norm")
                feedforward_index = 2
            _feedforward(loader, block.feedforward,
                         f"{prefix}.{feedforward_index}.DenseReluDense", backbone.gated)
            norm(loader, block.feedforward_norm, f"{prefix}.{feedforward_index}.layer_norm")
        norm(loader, final_norm, f"{stack}.final_layer_norm")
    if not backbone.encoder_only and not backbone.tie_embeddings:
        embedding(loader, backbone.output_token_embedding, "lm_head")  # [vocab, hidden]
    loader.finish()


def load_backbone(cls, path, dtype=None, **overrides):
    """A `T5Backbone` with the weights of a local HF T5 / mT5 checkpoint directory."""
    config, weights = read_checkpoint(path)
    kwargs = backbone_kwargs(config, weights)
    if overrides.get("encoder_only"):
        kwargs.update(num_decoder_layers=None, tie_embeddings=True)
    elif kwargs["encoder_only"] and overrides.get("encoder_only") is False:
        raise ValueError(f"`{path}` holds only an encoder (T5EncoderModel); it cannot give "
                         "a backbone with `encoder_only=False`.")
    kwargs.update(overrides)
    backbone = cls(**kwargs, dtype=dtype)
    load_weights(backbone, weights)
    return backbone


def generation_ids(config):
    """The decoder start, end and padding ids of an HF T5 config (T5's 0, 1, 0)."""
    pad = config.get("pad_token_id", 0)
    eos = config.get("eos_token_id", 1)
    if isinstance(eos, (list, tuple)):
        eos = eos[0]
    start = config.get("decoder_start_token_id")
    return {"decoder_start_token_id": pad if start is None else start,
            "eos_token_id": eos, "pad_token_id": pad}
