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

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

MODEL_TYPES = ("t5", "mt5")
# HF activation names (ACT2FN) -> ours.
ACTIVATIONS = {"relu": "relu", "gelu_new": "gelu_approximate",
               "gelu_pytorch_tanh": "gelu_approximate", "gelu": "gelu", "silu": "silu",
               "swish": "silu"}


def check_model_type(config):
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"Unsupported model_type {model_type!r} in config.json; T5 from_huggingface "
            f"reads {', '.join(repr(t) for t in MODEL_TYPES)} (T5ForConditionalGeneration, "
            "MT5ForConditionalGeneration, T5EncoderModel).")
    return model_type


def _activation(config):
    projection = config.get("feed_forward_proj", "relu")
    parts = projection.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"Unsupported feed_forward_proj {projection!r}; expected "
                         "'ACT' or 'gated-ACT'.")
    # transformers' own rule: "gated-gelu" means the tanh approximation (gelu_new).
    name = "gelu_new" if projection == "gated-gelu" else parts[-1]
    if name not in ACTIVATIONS:
        raise ValueError(f"Unsupported feed-forward activation {name!r} (feed_forward_proj "
                         f"{projection!r}); known: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name], len(parts) == 2


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
    check_model_type(config)
    activation, gated = _activation(config)
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
        "activation": activation,
        "gated": gated,
        "dropout": config.get("dropout_rate", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-6),
        "relative_attention_num_buckets": config.get("relative_attention_num_buckets", 32),
        "relative_attention_max_distance": config.get("relative_attention_max_distance", 128),
        "tie_embeddings": not untied_head(config, weights),
        "scale_decoder_output": bool(scale),
        "encoder_only": encoder_only,
    }


def _linear(shape_in, shape_out):
    """nn.Linear [out, in] -> a Keras kernel [*shape_in, *shape_out]."""
    return lambda w: w.T.reshape(*shape_in, *shape_out)


def _assign_attention(loader, attention, prefix, hidden, heads, head_dim):
    for dense, name in ((attention.query_dense, "q"), (attention.key_dense, "k"),
                        (attention.value_dense, "v")):
        loader.assign(dense.kernel, f"{prefix}.{name}.weight",
                      _linear((hidden,), (heads, head_dim)))
    loader.assign(attention.output_dense.kernel, f"{prefix}.o.weight",
                  _linear((heads, head_dim), (hidden,)))


def _assign_feedforward(loader, feedforward, prefix, gated):
    transpose = np.transpose
    if gated:
        loader.assign(feedforward.intermediate_gate.kernel, f"{prefix}.wi_0.weight", transpose)
        loader.assign(feedforward.intermediate.kernel, f"{prefix}.wi_1.weight", transpose)
    else:
        loader.assign(feedforward.intermediate.kernel, f"{prefix}.wi.weight", transpose)
    loader.assign(feedforward.output_dense.kernel, f"{prefix}.wo.weight", transpose)


def load_weights(backbone, weights):
    """Assign HF T5 tensors (by their HF names) to a `T5Backbone`."""
    ignore = [r"(encoder|decoder)\.embed_tokens\.weight"]  # copies of `shared`
    if backbone.encoder_only:
        ignore += [r"decoder\..*", r"lm_head\.weight"]  # a text encoder from a full model
    elif backbone.tie_embeddings:
        ignore.append(r"lm_head\.weight")  # checked equal to `shared` by `untied_head`
    loader = WeightLoader(weights, ignore=ignore)
    hidden, heads, head_dim = backbone.hidden_dim, backbone.num_heads, backbone.head_dim
    loader.assign(backbone.token_embedding.embeddings, "shared.weight")
    stacks = [("encoder", backbone.encoder_layers, backbone.encoder_position_bias,
               backbone.encoder_final_norm)]
    if not backbone.encoder_only:
        stacks.append(("decoder", backbone.decoder_layers, backbone.decoder_position_bias,
                       backbone.decoder_final_norm))
    for stack, blocks, position_bias, final_norm in stacks:
        loader.assign(position_bias.embeddings,
                      f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        for i, block in enumerate(blocks):
            prefix = f"{stack}.block.{i}.layer"
            _assign_attention(loader, block.self_attention, f"{prefix}.0.SelfAttention",
                              hidden, heads, head_dim)
            loader.assign(block.self_attention_norm.scale, f"{prefix}.0.layer_norm.weight")
            feedforward_index = 1
            if stack == "decoder":
                _assign_attention(loader, block.cross_attention, f"{prefix}.1.EncDecAttention",
                                  hidden, heads, head_dim)
                loader.assign(block.cross_attention_norm.scale, f"{prefix}.1.layer_norm.weight")
                feedforward_index = 2
            _assign_feedforward(loader, block.feedforward,
                                f"{prefix}.{feedforward_index}.DenseReluDense", backbone.gated)
            loader.assign(block.feedforward_norm.scale,
                          f"{prefix}.{feedforward_index}.layer_norm.weight")
        loader.assign(final_norm.scale, f"{stack}.final_layer_norm.weight")
    if not backbone.encoder_only and not backbone.tie_embeddings:
        loader.assign(backbone.output_token_embedding.embeddings, "lm_head.weight")
    loader.finish()


def load_t5_backbone(path, dtype=None, **overrides):
    """A `T5Backbone` with the weights of a local HF T5 / mT5 checkpoint directory."""
    from keras_bigmodels.models.t5.backbone import T5Backbone

    config, weights = read_checkpoint(path)
    kwargs = backbone_kwargs(config, weights)
    if overrides.get("encoder_only"):
        kwargs.update(num_decoder_layers=None, tie_embeddings=True)
    elif kwargs["encoder_only"] and overrides.get("encoder_only") is False:
        raise ValueError(f"`{path}` holds only an encoder (T5EncoderModel); it cannot give "
                         "a backbone with `encoder_only=False`.")
    kwargs.update(overrides)
    backbone = T5Backbone(**kwargs, dtype=dtype)
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
