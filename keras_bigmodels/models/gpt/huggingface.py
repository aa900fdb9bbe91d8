"""GPT-1 and GPT-2 weights from a local Hugging Face checkpoint directory (no torch needed).

HF's GPT and GPT-2 use Conv1D layers whose weights are [in, out] (the transpose of
nn.Linear), and one `c_attn` projection holding query|key|value side by side. The two
differ in block order (GPT-1 is post-norm: `ln_1`/`ln_2` after each residual add, no final
norm) and in names (`tokens_embed`/`positions_embed` vs `wte`/`wpe`); `model_type` in
config.json picks the mapping.
"""

import os

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

ACTIVATIONS = {"gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate",
               "gelu": "gelu", "relu": "relu", "tanh": "tanh", "silu": "silu"}
# modeling_openai.py's own table: its "gelu" is gelu_new (the tanh approximation), unlike
# GPT-2's activation_function "gelu", which is the exact erf form.
OPENAI_GPT_ACTIVATIONS = {"gelu": "gelu_approximate", "relu": "relu", "silu": "silu",
                          "swish": "silu"}


def _activation(config, key, default, table):
    name = config.get(key, default)
    if name not in table:
        raise ValueError(f"Unsupported {key} {name!r} for model_type "
                         f"{config.get('model_type')!r}; known: {', '.join(table)}.")
    return table[name]


def _shared_kwargs(config, intermediate_dim, normalize_first, activation):
    """The GPTBackbone kwargs GPT-1 and GPT-2 configs spell the same way."""
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["n_layer"],
        "num_heads": config["n_head"],
        "hidden_dim": config["n_embd"],
        "intermediate_dim": intermediate_dim,
        "max_sequence_length": config["n_positions"],
        "normalize_first": normalize_first,
        "activation": activation,
        "dropout": config.get("resid_pdrop", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-5),
    }


def gpt2_backbone_kwargs(config):
    """GPTBackbone kwargs of an HF GPT2Config dict."""
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
        raise ValueError("GPT-2 checkpoints with scale_attn_by_inverse_layer_idx or "
                         "reorder_and_upcast_attn are not supported.")
    if config.get("scale_attn_weights") is False:
        raise ValueError("GPT-2 checkpoints with scale_attn_weights=False are not supported.")
    return _shared_kwargs(
        config, config.get("n_inner") or 4 * config["n_embd"], normalize_first=True,
        activation=_activation(config, "activation_function", "gelu_new", ACTIVATIONS))


def openai_gpt_backbone_kwargs(config):
    """GPTBackbone kwargs of an HF OpenAIGPTConfig dict (the original GPT)."""
    # modeling_openai.py hard-codes the MLP width; its config has no n_inner.
    return _shared_kwargs(
        config, 4 * config["n_embd"], normalize_first=False,
        activation=_activation(config, "afn", "gelu", OPENAI_GPT_ACTIVATIONS))


# model_type -> (backbone kwargs, embedding names (token, position), final norm name).
MODEL_TYPES = {
    "gpt2": (gpt2_backbone_kwargs, ("wte.weight", "wpe.weight"), "ln_f"),
    "openai-gpt": (openai_gpt_backbone_kwargs,
                   ("tokens_embed.weight", "positions_embed.weight"), None),
}


def _model_type(config):
    # Very old GPT-2 configs carry no model_type; every other family names itself.
    model_type = config.get("model_type", "gpt2")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"Unsupported model_type {model_type!r} in config.json; "
                         f"GPTCausalLM.from_huggingface reads {', '.join(MODEL_TYPES)}.")
    return model_type


def backbone_kwargs(config):
    """GPTBackbone kwargs of an HF GPT-2 or OpenAI GPT config dict."""
    return MODEL_TYPES[_model_type(config)][0](config)


def load_weights(backbone, weights, model_type="gpt2"):
    """Assign HF GPT-2 (or, with model_type "openai-gpt", GPT-1) tensors to a `GPTBackbone`."""
    _, (token_name, position_name), final_norm_name = MODEL_TYPES[model_type]
    if (final_norm_name is None) != (backbone.final_norm is None):
        raise ValueError(f"A {model_type!r} checkpoint needs a GPTBackbone with "
                         f"normalize_first={final_norm_name is not None}.")
    lm_head = weights.get("lm_head.weight")
    token_table = weights.get("transformer." + token_name, weights.get(token_name))
    # Our output layer is tied to the token embedding; an untied head cannot be loaded.
    if lm_head is not None and token_table is not None and not np.array_equal(
            np.asarray(lm_head), np.asarray(token_table)):
        raise ValueError("The checkpoint's lm_head.weight differs from its token embedding "
                         f"`{token_name}` (tie_word_embeddings=False); GPTCausalLM ties them.")
    loader = WeightLoader(weights, prefixes=("transformer.",), ignore=(r"lm_head\.weight",))
    heads, head_dim, hidden = backbone.num_heads, backbone.head_dim, backbone.hidden_dim
    loader.assign(backbone.token_embedding.embeddings, token_name)
    loader.assign(backbone.embedding.position_embedding.embeddings, position_name)
    for i, block in enumerate(backbone.transformer_layers):
        prefix = f"h.{i}."
        attention = block.self_attention
        qkv_kernel = loader.get(prefix + "attn.c_attn.weight")
        qkv_bias = loader.get(prefix + "attn.c_attn.bias")
        if qkv_kernel is not None and qkv_bias is not None:
            kernels = np.split(qkv_kernel, 3, axis=-1)
            biases = np.split(qkv_bias, 3, axis=-1)
            for dense, kernel, bias in zip(
                    (attention.query_dense, attention.key_dense, attention.value_dense),
                    kernels, biases):
                dense.kernel.assign(kernel.reshape(hidden, heads, head_dim))
                dense.bias.assign(bias.reshape(heads, head_dim))
        loader.assign(attention.output_dense.kernel, prefix + "attn.c_proj.weight",
                      lambda w: w.reshape(heads, head_dim, hidden))
        loader.assign(attention.output_dense.bias, prefix + "attn.c_proj.bias")
        loader.assign(block.self_attention_norm.gamma, prefix + "ln_1.weight")
        loader.assign(block.self_attention_norm.beta, prefix + "ln_1.bias")
        loader.assign(block.feedforward_norm.gamma, prefix + "ln_2.weight")
        loader.assign(block.feedforward_norm.beta, prefix + "ln_2.bias")
        loader.assign(block.feedforward.intermediate.kernel, prefix + "mlp.c_fc.weight")
        loader.assign(block.feedforward.intermediate.bias, prefix + "mlp.c_fc.bias")
        loader.assign(block.feedforward.output_dense.kernel, prefix + "mlp.c_proj.weight")
        loader.assign(block.feedforward.output_dense.bias, prefix + "mlp.c_proj.bias")
    if final_norm_name is not None:
        loader.assign(backbone.final_norm.gamma, final_norm_name + ".weight")
        loader.assign(backbone.final_norm.beta, final_norm_name + ".bias")
    loader.finish()


def load_gpt(task_cls, path, dtype=None, **backbone_overrides):
    """`task_cls(backbone, tokenizer)` with a GPT-1 or GPT-2 checkpoint's weights and tokenizer."""
    from keras_bigmodels.models.gpt.backbone import GPTBackbone

    config, weights = read_checkpoint(path)
    model_type = _model_type(config)
    kwargs = {**backbone_kwargs(config), **backbone_overrides}
    backbone = GPTBackbone(**kwargs, dtype=dtype)
    load_weights(backbone, weights, model_type)
    tokenizer = None
    if os.path.isfile(os.path.join(os.fspath(path), "tokenizer.json")):
        from keras_bigmodels.tokenizers import Tokenizer

        tokenizer = Tokenizer.from_dir(path)
    return task_cls(backbone, tokenizer=tokenizer)


load_gpt2 = load_gpt  # the name before GPT-1 checkpoints were read too
