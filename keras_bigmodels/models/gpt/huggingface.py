"""GPT-1 and GPT-2 weights from a local Hugging Face checkpoint directory (no torch needed).

HF's GPT and GPT-2 use Conv1D layers whose weights are [in, out] (the transpose of
nn.Linear), and one `c_attn` projection holding query|key|value side by side. The two
differ in block order (GPT-1 is post-norm: `ln_1`/`ln_2` after each residual add, no final
norm) and in names (`tokens_embed`/`positions_embed` vs `wte`/`wpe`); `model_type` in
config.json picks the mapping.
"""

import os

import numpy as np

from keras_bigmodels.checkpoints import (HF_ACTIVATIONS, WeightLoader, activation,
                                         check_model_type, dense, embedding, heads_projection,
                                         norm, read_checkpoint)

# modeling_openai.py's own table: its "gelu" is gelu_new (the tanh approximation), unlike
# GPT-2's activation_function "gelu", which is the exact erf form.
OPENAI_GPT_ACTIVATIONS = {"gelu": "gelu_approximate", "relu": "relu", "silu": "silu",
                          "swish": "silu"}


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
        activation=activation(config, "activation_function", "gelu_new", HF_ACTIVATIONS))


def openai_gpt_backbone_kwargs(config):
    """GPTBackbone kwargs of an HF OpenAIGPTConfig dict (the original GPT)."""
    # modeling_openai.py hard-codes the MLP width; its config has no n_inner.
    return _shared_kwargs(
        config, 4 * config["n_embd"], normalize_first=False,
        activation=activation(config, "afn", "gelu", OPENAI_GPT_ACTIVATIONS))


# model_type -> (backbone kwargs, embedding names (token, position), final norm name).
MODEL_TYPES = {
    "gpt2": (gpt2_backbone_kwargs, ("wte", "wpe"), "ln_f"),
    "openai-gpt": (openai_gpt_backbone_kwargs, ("tokens_embed", "positions_embed"), None),
}


def _model_type(config):
    # Very old GPT-2 configs carry no model_type; every other family names itself.
    return check_model_type(config, tuple(MODEL_TYPES), "GPTCausalLM.from_huggingface",
                            default="gpt2")


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
    token_table = weights.get(f"transformer.{token_name}.weight",
                              weights.get(f"{token_name}.weight"))
    # Our output layer is tied to the token embedding; an untied head cannot be loaded.
    if lm_head is not None and token_table is not None and not np.array_equal(
            np.asarray(lm_head), np.asarray(token_table)):
        raise ValueError("The checkpoint's lm_head.weight differs from its token embedding "
                         f"`{token_name}` (tie_word_embeddings=False); GPTCausalLM ties them.")
    loader = WeightLoader(weights, prefixes=("transformer.",), ignore=(r"lm_head\.weight",))
    embedding(loader, backbone.token_embedding, token_name)
    embedding(loader, backbone.embedding.position_embedding, position_name)
    for i, block in enumerate(backbone.transformer_layers):
        prefix = f"h.{i}."
        attention = block.self_attention
        # Conv1D weights are [in, out] already (no transpose); `c_attn` holds
        # query|key|value side by side on its output axis.
        for part, projection in enumerate(
                (attention.query_dense, attention.key_dense, attention.value_dense)):
            def third(w, part=part):
                return np.split(w, 3, axis=-1)[part]

            loader.assign(projection.kernel, prefix + "attn.c_attn.weight", third, reshape=True)
            loader.assign(projection.bias, prefix + "attn.c_attn.bias", third, reshape=True)
        heads_projection(loader, attention.output_dense, prefix + "attn.c_proj",
                         transpose=False)
        norm(loader, block.self_attention_norm, prefix + "ln_1")
        norm(loader, block.feedforward_norm, prefix + "ln_2")
        dense(loader, block.feedforward.intermediate, prefix + "mlp.c_fc", transpose=False)
        dense(loader, block.feedforward.output_dense, prefix + "mlp.c_proj", transpose=False)
    if final_norm_name is not None:
        norm(loader, backbone.final_norm, final_norm_name)
    loader.finish()


def load_backbone(cls, path, dtype=None, **overrides):
    """A `cls` (GPTBackbone) with a GPT-1 or GPT-2 checkpoint's weights."""
    config, weights = read_checkpoint(path)
    model_type = _model_type(config)
    backbone = cls(**{**backbone_kwargs(config), **overrides}, dtype=dtype)
    load_weights(backbone, weights, model_type)
    return backbone


def load_gpt(task_cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
    """`task_cls(backbone, tokenizer)` with a GPT-1 or GPT-2 checkpoint's weights and tokenizer."""
    from keras_bigmodels.models.gpt.backbone import GPTBackbone

    backbone = load_backbone(GPTBackbone, path, dtype, **(backbone_overrides or {}))
    if "tokenizer" not in task_kwargs and os.path.isfile(
            os.path.join(os.fspath(path), "tokenizer.json")):
        from keras_bigmodels.tokenizers import Tokenizer

        task_kwargs["tokenizer"] = Tokenizer.from_dir(path)
    return task_cls(backbone, **task_kwargs)
