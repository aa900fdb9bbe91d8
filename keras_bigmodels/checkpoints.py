r"""Reading local Hugging Face checkpoint directories (config.json + safetensors), no torch.

Families keep only their name tables: which HF tensor goes to which of their layers. This
module reads the files, strips task prefixes, ignores known buffers, checks shapes exactly
(a transpose or reshape happens only where a mapping states it), reports missing or
unexpected weights by name, and holds the mapping helpers every family shares: `dense`,
`heads_projection` and `attention` (query/key/value/output split into heads), `norm`,
`embedding`, `conv`, `encoder_block` (a whole transformer block from a name table), plus
`activation` and `check_model_type` for config.json.

Example:
>>> config, weights = read_checkpoint("bert-tiny/")          # a save_pretrained directory
>>> loader = WeightLoader(weights, prefixes=("bert.",), ignore=(r"cls\..*",))
>>> norm(loader, backbone.embeddings.embedding_norm, "embeddings.LayerNorm")
>>> dense(loader, backbone.pooler, "pooler.dense")           # torch Linear: transposed
>>> loader.finish()                                          # missing/unexpected -> ValueError
"""

import json
import os
import re

import keras
import numpy as np

# Buffers that some transformers versions save but that are not weights.
KNOWN_BUFFERS = (
    r".*position_ids$",
    r".*\.masked_bias$",
    r".*\.attn\.bias$",
    r".*relative_position_index$",
    r".*num_batches_tracked$",
)

# transformers' ACT2FN names -> ours. "gelu" is the exact erf form everywhere except in
# OpenAI GPT's own table (models/gpt/huggingface.py); quick_gelu is CLIP's x * sigmoid(1.702 x).
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
    "quick_gelu": "quick_gelu",
}


def activation(config, key="hidden_act", default="gelu", table=HF_ACTIVATIONS):
    """Our activation name for `config[key]` (an HF ACT2FN name); ValueError if unknown.

    Args:
        config: the config.json dict.
        key: the entry naming the activation (`hidden_act`, `activation_function`, ...).
        default: the value when the entry is absent (the HF config class's default).
        table: HF name -> our name, for families whose names differ.

    Example:
    >>> activation({"hidden_act": "gelu_new"})
    'gelu_approximate'
    """
    name = config.get(key, default)
    if name not in table:
        raise ValueError(f"Unsupported `{key}` {name!r} in config.json "
                         f"(model_type {config.get('model_type')!r}); known: "
                         f"{', '.join(table)}.")
    return table[name]


def check_model_type(config, supported, reader, default=None):
    """config.json's `model_type` if `reader` reads it, else a ValueError naming both.

    Args:
        config: the config.json dict.
        supported: the model types the reader maps.
        reader: what the user called, for the message (e.g. "ViTBackbone.from_huggingface").
        default: the type of configs without a `model_type` (very old GPT-2 ones); None
            refuses them.

    Example:
    >>> check_model_type({"model_type": "vit"}, ("vit",), "ViTBackbone.from_huggingface")
    'vit'
    """
    model_type = config.get("model_type", default)
    if model_type not in supported:
        raise ValueError(f"Unsupported model_type {model_type!r} in config.json; {reader} "
                         f"reads {', '.join(repr(t) for t in supported)} checkpoints.")
    return model_type


def read_config(path):
    """The config.json of a checkpoint directory, as a dict."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(
            f"`{path}` is not a Hugging Face checkpoint directory: no config.json. Pass the "
            "directory written by `save_pretrained` (config.json + model.safetensors)."
        )
    with open(config_file) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"`{config_file}` is not valid JSON ({error}).") from None


def _load_safetensors(file):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(file)
    except SafetensorError as error:
        raise ValueError(f"`{file}` is not a readable safetensors file ({error}); it may be "
                         "truncated or corrupt: copy or save it again.") from None


def read_weights(path):
    """All tensors of a checkpoint directory as numpy arrays, by their HF names."""
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        return _load_safetensors(single)
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for name in files:
            weights.update(_load_safetensors(os.path.join(path, name)))
        return weights
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        if keras.backend.backend() != "torch":
            raise ValueError(
                f"`{path}` holds only pytorch_model.bin, which needs torch to read. Re-save the "
                "checkpoint with `save_pretrained(..., safe_serialization=True)`, or load it "
                "with KERAS_BACKEND=torch.")
        from keras_bigmodels.backend import read_torch_state_dict

        return read_torch_state_dict(bin_file, path)
    raise ValueError(f"No model.safetensors (or index, or pytorch_model.bin) in `{path}`.")


def read_checkpoint(path):
    """(config, weights) of a local HF checkpoint directory."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"`{path}` is not a directory; `from_huggingface` reads a local "
                         "checkpoint directory (nothing is downloaded).")
    return read_config(path), read_weights(path)


class WeightLoader:
    r"""Hands out checkpoint tensors by name and reports what was never used or found.

    Args:
        weights: {name: array}.
        prefixes: task prefixes to strip (e.g. "bert.", "roberta."), tried in order.
        ignore: regexes of names that may stay unused (heads we do not build, buffers).

    Example:
    >>> loader = WeightLoader(weights, prefixes=("vit.",))
    >>> loader.assign(backbone.get_layer("final_norm").gamma, "layernorm.weight")
    >>> loader.finish(ignore=(r"classifier\..*",))
    """

    def __init__(self, weights, prefixes=(), ignore=()):
        self.weights = {}
        for name, value in weights.items():
            for prefix in prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            self.weights[name] = value
        self.ignore = [re.compile(p) for p in (*KNOWN_BUFFERS, *ignore)]
        self.used = set()
        self.missing = []

    def __contains__(self, name):
        return name in self.weights

    def get(self, name):
        """The tensor `name` as a numpy array (marked used), or None (recorded as missing)."""
        if name not in self.weights:
            if name not in self.missing:
                self.missing.append(name)
            return None
        self.used.add(name)
        return np.asarray(self.weights[name])

    def assign(self, variable, name, transform=None, *, transpose=False, reshape=False):
        """Assign checkpoint tensor `name` to a Keras variable; shapes must match exactly.

        A checkpoint tensor is never re-laid-out unless the mapping says how: a forgotten
        transpose of a non-square kernel would otherwise load scrambled values.

        Args:
            variable: the Keras variable to fill.
            name: the tensor's name in the checkpoint (task prefix stripped).
            transform: a callable applied first, for a re-layout the flags below cannot
                state (e.g. taking one third of a fused query|key|value kernel).
            transpose: True reverses the axes (a torch Linear's [out, in] -> Keras' [in,
                out]); a tuple of axes permutes them (a Conv2d's (2, 3, 1, 0)).
            reshape: True reshapes, after any transpose, into the variable's shape: for
                kernels and biases that Keras splits into heads ([in, heads * head_dim] ->
                [in, heads, head_dim]). The element order is kept; sizes must agree.

        Example:
        >>> loader.assign(attention.query_dense.kernel, "attn.q.weight", transpose=True,
        ...               reshape=True)
        """
        value = self.get(name)
        if value is None:
            return
        if transform is not None:
            value = np.asarray(transform(value))
        if transpose is not False:
            value = np.transpose(value, None if transpose is True else transpose)
        expected = tuple(variable.shape)
        if reshape and value.size == int(np.prod(expected)):
            value = np.reshape(value, expected)
        if tuple(value.shape) != expected:
            raise ValueError(self._shape_message(name, value, variable, transpose, reshape))
        variable.assign(value.astype(variable.dtype))

    @staticmethod
    def _shape_message(name, value, variable, transpose, reshape):
        expected = tuple(variable.shape)
        stated = [f"transpose={transpose!r}"] if transpose is not False else []
        stated += ["reshape=True"] if reshape else []
        message = (f"Checkpoint weight `{name}` has shape {tuple(value.shape)}"
                   f"{' after ' + ', '.join(stated) if stated else ''} but `{variable.path}` "
                   f"needs {expected}.")
        if value.size != int(np.prod(expected)):
            return message + " The checkpoint's config does not match the model."
        if value.ndim == 2 and value.T.shape == expected:
            hint = ("Its transpose fits: does the mapping forget `transpose=True`?"
                    if transpose is False else
                    "Its transpose fits: this checkpoint stores the tensor the other way round.")
        else:
            hint = ("The sizes agree: does the mapping forget to state a transpose or "
                    "`reshape=True`?")
        return f"{message} {hint}"

    def finish(self, ignore=()):
        """Raise a clear error listing missing and unexpected weights, if any.

        Args:
            ignore: more regexes of names that may stay unused (e.g. a head that a backbone
                does not build, while the task that builds it reads it).
        """
        patterns = [*self.ignore, *(re.compile(p) for p in ignore)]
        unexpected = sorted(
            n for n in self.weights
            if n not in self.used and not any(p.fullmatch(n) for p in patterns)
        )
        if self.missing or unexpected:
            lines = ["The checkpoint does not match the model's architecture."]
            if self.missing:
                lines.append(f"Missing weights ({len(self.missing)}): {', '.join(self.missing[:20])}")
            if unexpected:
                lines.append(f"Unexpected weights ({len(unexpected)}): {', '.join(unexpected[:20])}")
            raise ValueError("\n".join(lines))


# Mapping helpers. `name` is a module's name in the checkpoint (e.g.
# "encoder.layer.0.attention.self.query"); each helper reads its `.weight` / `.bias`.

def dense(loader, layer, name, transpose=True):
    """A Linear's `{name}.weight` (and `.bias`, if the layer has one) onto a Keras Dense.

    Args:
        loader: the `WeightLoader`.
        layer: a `keras.layers.Dense` (kernel [in, out]).
        name: the module's name in the checkpoint.
        transpose: True for torch `nn.Linear` ([out, in]); False for GPT-2's `Conv1D`,
            which stores [in, out].

    Example:
    >>> dense(loader, backbone.pooler, "pooler.dense")
    """
    loader.assign(layer.kernel, f"{name}.weight", transpose=transpose)
    if getattr(layer, "bias", None) is not None:
        loader.assign(layer.bias, f"{name}.bias")


def heads_projection(loader, layer, name, transpose=True):
    """A Linear onto an EinsumDense that splits (or merges) heads: reshaped, as stated.

    Query/key/value kernels are [in, heads, head_dim] with bias [heads, head_dim]; an
    output kernel is [heads, head_dim, out] with bias [out]. The Linear's flat
    heads * head_dim axis is head-major, as ours, so a reshape is the whole re-layout.

    Args:
        loader, layer, name, transpose: as in `dense`.

    Example:
    >>> heads_projection(loader, attention.query_dense, "attn.q_proj")
    """
    loader.assign(layer.kernel, f"{name}.weight", transpose=transpose, reshape=True)
    if getattr(layer, "bias", None) is not None:
        loader.assign(layer.bias, f"{name}.bias", reshape=True)


def attention(loader, layer, query, key, value, output, transpose=True):
    """The four projections of a `MultiHeadAttention` from four Linear module names.

    Args:
        loader: the `WeightLoader`.
        layer: a `keras_bigmodels.layers.MultiHeadAttention` (built).
        query, key, value, output: the projections' module names in the checkpoint.
        transpose: as in `dense`.

    Example:
    >>> attention(loader, block.self_attention, *(f"h.0.attn.{n}" for n in "qkvo"))
    """
    for dense_layer, module in ((layer.query_dense, query), (layer.key_dense, key),
                                (layer.value_dense, value), (layer.output_dense, output)):
        heads_projection(loader, dense_layer, module, transpose=transpose)


def norm(loader, layer, name):
    """A LayerNorm's (or RMS norm's) `{name}.weight` and, if it has one, `.bias`.

    Args:
        loader: the `WeightLoader`.
        layer: a `keras.layers.LayerNormalization` (gamma, beta) or a norm whose scale is
            `scale` (RMS norms).
        name: the module's name in the checkpoint.

    Example:
    >>> norm(loader, block.self_attention_norm, "encoder.layer.0.layernorm_before")
    """
    scale = getattr(layer, "gamma", None)
    loader.assign(layer.scale if scale is None else scale, f"{name}.weight")
    if getattr(layer, "beta", None) is not None:
        loader.assign(layer.beta, f"{name}.bias")


def embedding(loader, layer, name):
    """An `nn.Embedding`'s `{name}.weight` onto a layer's `embeddings` table.

    Example:
    >>> embedding(loader, backbone.token_embedding, "wte")
    """
    loader.assign(layer.embeddings, f"{name}.weight")


def conv(loader, layer, name):
    """A torch `nn.Conv2d` ([out, in, kh, kw]) onto a Keras Conv2D ([kh, kw, in, out]).

    Example:
    >>> conv(loader, patch_projection, "embeddings.patch_embeddings.projection")
    """
    loader.assign(layer.kernel, f"{name}.weight", transpose=(2, 3, 1, 0))
    if getattr(layer, "bias", None) is not None:
        loader.assign(layer.bias, f"{name}.bias")


# The order of the module names `encoder_block` takes; families keep one such tuple.
ENCODER_BLOCK_PARTS = ("query", "key", "value", "output", "attention_norm", "intermediate",
                       "feedforward_output", "feedforward_norm")


def pre_norm_block_names(attention_scope):
    """The module names of HF's ViT-style pre-norm block, in `ENCODER_BLOCK_PARTS` order.

    ViT, DeiT, BEiT and Swin share it (`layernorm_before`, `layernorm_after`); they differ
    in where the query/key/value projections sit.

    Args:
        attention_scope: the projections' module, e.g. "attention.attention" (ViT) or
            "attention.self" (Swin).

    Example:
    >>> pre_norm_block_names("attention.self")[0]
    'attention.self.query'
    """
    return (f"{attention_scope}.query", f"{attention_scope}.key", f"{attention_scope}.value",
            "attention.output.dense", "layernorm_before", "intermediate.dense",
            "output.dense", "layernorm_after")


def encoder_block(loader, block, prefix, names, transpose=True):
    """A transformer block (self-attention, feed-forward, their two norms) from HF names.

    Args:
        loader: the `WeightLoader`.
        block: a `TransformerEncoderBlock` (or any block with `self_attention`,
            `self_attention_norm`, `feedforward` and `feedforward_norm`).
        prefix: the block's module name in the checkpoint (e.g. "encoder.layer.3").
        names: eight module names under `prefix`, in `ENCODER_BLOCK_PARTS` order.
        transpose: as in `dense`.

    Example:
    >>> VIT_BLOCK = ("attention.attention.query", "attention.attention.key",
    ...              "attention.attention.value", "attention.output.dense", "layernorm_before",
    ...              "intermediate.dense", "output.dense", "layernorm_after")
    >>> encoder_block(loader, backbone.get_layer("transformer_layer_0"), "encoder.layer.0",
    ...               VIT_BLOCK)
    """
    if len(names) != len(ENCODER_BLOCK_PARTS):
        raise ValueError(f"`names` must give {len(ENCODER_BLOCK_PARTS)} module names "
                         f"({', '.join(ENCODER_BLOCK_PARTS)}); received {len(names)}.")
    query, key, value, output, attention_norm, intermediate, feedforward_output, \
        feedforward_norm = (f"{prefix}.{name}" for name in names)
    attention(loader, block.self_attention, query, key, value, output, transpose=transpose)
    norm(loader, block.self_attention_norm, attention_norm)
    dense(loader, block.feedforward.intermediate, intermediate, transpose=transpose)
    dense(loader, block.feedforward.output_dense, feedforward_output, transpose=transpose)
    norm(loader, block.feedforward_norm, feedforward_norm)


TOKENIZER_FILES = (("tokenizer.json",), ("spiece.model",), ("vocab.json", "merges.txt"),
                   ("vocab.txt",))


def read_tokenizer(path):
    """The checkpoint directory's tokenizer as a `Tokenizer`, or None without one.

    Whichever files the directory has, read as transformers reads them: `tokenizer.json`,
    else a SentencePiece `spiece.model` (T5, mT5), a byte-level `vocab.json` +
    `merges.txt` (BART's `<s> ... </s>`, CLIP's, GPT-2's: told apart by
    `tokenizer_config.json` or `config.json`'s `model_type`) or a WordPiece `vocab.txt`.

    Args:
        path: a local checkpoint directory.

    Example:
    >>> import tempfile; read_tokenizer(tempfile.mkdtemp()) is None
    True
    """
    path = os.fspath(path)
    if not any(all(os.path.isfile(os.path.join(path, name)) for name in names)
               for names in TOKENIZER_FILES):
        return None
    from keras_bigmodels.tokenizers import Tokenizer

    return Tokenizer.from_dir(path)
