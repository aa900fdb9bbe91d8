"""GPT-2 weights from a local Hugging Face checkpoint directory (no torch needed).

HF's GPT-2 uses Conv1D layers whose weights are [in, out] (the transpose of nn.Linear),
and one `c_attn` projection holding query|key|value side by side.
"""

import os

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

ACTIVATIONS = {"gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate",
               "gelu": "gelu", "relu": "relu", "tanh": "tanh", "silu": "silu"}


def backbone_kwargs(config):
    """GPTBackbone kwargs of an HF GPT2Config dict."""
    if config.get("model_type") not in (None, "gpt2"):
        raise ValueError(f"Expected a GPT-2 checkpoint (model_type 'gpt2'); received "
                         f"{config.get('model_type')!r}.")
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
        raise ValueError("GPT-2 checkpoints with scale_attn_by_inverse_layer_idx or "
                         "reorder_and_upcast_attn are not supported.")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unsupported activation_function {activation!r}; known: "
                         f"{', '.join(ACTIVATIONS)}.")
    hidden = config["n_embd"]
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["n_layer"],
        "num_heads": config["n_head"],
        "hidden_dim": hidden,
        "intermediate_dim": config.get("n_inner") or 4 * hidden,
        "max_sequence_length": config["n_positions"],
        "normalize_first": True,
        "activation": ACTIVATIONS[activation],
        "dropout": config.get("resid_pdrop", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-5),
    }


def load_weights(backbone, weights):
    """Assign HF GPT-2 tensors to a `GPTBackbone`."""
    loader = WeightLoader(weights, prefixes=("transformer.",), ignore=(r"lm_head\.weight",))
    heads, head_dim, hidden = backbone.num_heads, backbone.head_dim, backbone.hidden_dim
    loader.assign(backbone.token_embedding.embeddings, "wte.weight")
    loader.assign(backbone.embedding.position_embedding.embeddings, "wpe.weight")
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
    loader.assign(backbone.final_norm.gamma, "ln_f.weight")
    loader.assign(backbone.final_norm.beta, "ln_f.bias")
    loader.finish()


def load_gpt2(task_cls, path, dtype=None, **backbone_overrides):
    """`task_cls(backbone, tokenizer)` with a checkpoint's weights and tokenizer."""
    from keras_bigmodels.models.gpt.backbone import GPTBackbone

    config, weights = read_checkpoint(path)
    kwargs = {**backbone_kwargs(config), **backbone_overrides}
    backbone = GPTBackbone(**kwargs, dtype=dtype)
    load_weights(backbone, weights)
    tokenizer = None
    if os.path.isfile(os.path.join(os.fspath(path), "tokenizer.json")):
        from keras_bigmodels.tokenizers import Tokenizer

        tokenizer = Tokenizer.from_dir(path)
    return task_cls(backbone, tokenizer=tokenizer)
