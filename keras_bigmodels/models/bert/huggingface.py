"""Weights of local Hugging Face BERT / RoBERTa / ALBERT checkpoints onto our variables."""

import warnings

import numpy as np

from keras_bigmodels.checkpoints import WeightLoader, read_checkpoint

SUPPORTED = ("bert", "roberta", "albert")
PREFIXES = ("bert.", "roberta.", "albert.")
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}
# Heads of task checkpoints that a backbone does not build; tied decoders are the table.
HEAD_WEIGHTS = (r"cls\..*", r"lm_head\..*", r"predictions\..*", r"sop_classifier\..*",
                r"classifier\..*", r"qa_outputs\..*", r"dropout.*")
TIED_DECODERS = (r"cls\.predictions\.decoder\..*", r"lm_head\.decoder\..*",
                 r"predictions\.decoder\..*")


def model_type(hf_config):
    kind = hf_config.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(
            f"The checkpoint's model_type is {kind!r}; BertBackbone.from_huggingface reads "
            f"{', '.join(SUPPORTED)} checkpoints."
        )
    return kind


def backbone_kwargs(hf_config):
    """Our constructor kwargs for an HF config.json dict, honouring eps, activation, positions."""
    kind = model_type(hf_config)
    position_type = hf_config.get("position_embedding_type") or "absolute"
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported; only 'absolute'."
        )
    activation = hf_config.get("hidden_act", "gelu")
    if activation not in HF_ACTIVATIONS:
        raise ValueError(
            f"hidden_act={activation!r} is not supported; known: {', '.join(HF_ACTIVATIONS)}."
        )
    offset = hf_config.get("pad_token_id", 1) + 1 if kind == "roberta" else 0
    kwargs = dict(
        vocabulary_size=hf_config["vocab_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        hidden_dim=hf_config["hidden_size"],
        intermediate_dim=hf_config["intermediate_size"],
        max_sequence_length=hf_config["max_position_embeddings"] - offset,
        num_segments=hf_config.get("type_vocab_size", 2),
        position_offset=offset,
        activation=HF_ACTIVATIONS[activation],
        dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        layer_norm_epsilon=hf_config.get("layer_norm_eps", 1e-12),
        initializer_range=hf_config.get("initializer_range", 0.02),
    )
    if kind == "albert":
        groups = (hf_config.get("num_hidden_groups", 1), hf_config.get("inner_group_num", 1))
        if groups != (1, 1):
            raise ValueError(
                f"ALBERT with num_hidden_groups={groups[0]}, inner_group_num={groups[1]} is "
                "not supported; the released ALBERTs use 1 and 1 (one shared layer)."
            )
        kwargs.update(embedding_dim=hf_config["embedding_size"], share_layers=True)
    return kwargs


def _t(w):
    return np.transpose(w)


def _norm(loader, layer, name):
    loader.assign(layer.gamma, f"{name}.weight")
    loader.assign(layer.beta, f"{name}.bias")


def _dense(loader, layer, name):
    """A torch Linear [out, in] onto a Dense/EinsumDense kernel (reshaped to its layout)."""
    loader.assign(layer.kernel, f"{name}.weight", _t)
    loader.assign(layer.bias, f"{name}.bias")


def assign_backbone(backbone, loader, kind, warn_missing_pooler=True):
    emb = backbone.embeddings
    e = "embeddings"
    loader.assign(emb.token_embedding.embeddings, f"{e}.word_embeddings.weight")
    loader.assign(emb.position_embedding.embeddings, f"{e}.position_embeddings.weight")
    loader.assign(emb.segment_embedding.embeddings, f"{e}.token_type_embeddings.weight")
    _norm(loader, emb.embedding_norm, f"{e}.LayerNorm")
    if kind == "albert":
        _dense(loader, emb.embedding_projection, "encoder.embedding_hidden_mapping_in")
        blocks = [(backbone.transformer_layers[0],
                   "encoder.albert_layer_groups.0.albert_layers.0")]
        names = ("attention.query", "attention.key", "attention.value", "attention.dense",
                 "attention.LayerNorm", "ffn", "ffn_output", "full_layer_layer_norm")
        pooler = "pooler"
    else:
        blocks = [(block, f"encoder.layer.{i}")
                  for i, block in enumerate(backbone.transformer_layers)]
        names = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                 "output.dense", "output.LayerNorm")
        pooler = "pooler.dense"
    for block, p in blocks:
        attention = block.self_attention
        q, k, v, o, attention_norm, ffn_in, ffn_out, ffn_norm = (f"{p}.{n}" for n in names)
        _dense(loader, attention.query_dense, q)
        _dense(loader, attention.key_dense, k)
        _dense(loader, attention.value_dense, v)
        _dense(loader, attention.output_dense, o)
        _norm(loader, block.self_attention_norm, attention_norm)
        _dense(loader, block.feedforward.intermediate, ffn_in)
        _dense(loader, block.feedforward.output_dense, ffn_out)
        _norm(loader, block.feedforward_norm, ffn_norm)
    if f"{pooler}.weight" in loader or f"{pooler}.bias" in loader:
        _dense(loader, backbone.pooler, pooler)
    elif warn_missing_pooler:
        # *ForMaskedLM checkpoints are saved without a pooler; HF leaves it random too.
        warnings.warn(
            "The checkpoint has no pooler weights (e.g. a *ForMaskedLM checkpoint); "
            "`pooled_output` comes from a randomly initialized pooler.", stacklevel=3
        )


def make_loader(weights, ignore=()):
    return WeightLoader(weights, prefixes=PREFIXES, ignore=ignore)


def load_backbone(cls, path, **overrides):
    hf_config, weights = read_checkpoint(path)
    kind = model_type(hf_config)
    kwargs = backbone_kwargs(hf_config)
    kwargs.update(overrides)
    backbone = cls(**kwargs)
    loader = make_loader(weights, ignore=HEAD_WEIGHTS)
    assign_backbone(backbone, loader, kind)
    loader.finish()
    return backbone


MLM_HEAD_NAMES = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias"),
}
SENTENCE_HEAD_NAMES = {"bert": "cls.seq_relationship", "albert": "sop_classifier.classifier"}


def assign_mlm_head(head, loader, kind):
    dense, norm, bias = MLM_HEAD_NAMES[kind]
    _dense(loader, head.dense, dense)
    _norm(loader, head.norm, norm)
    loader.assign(head.bias, bias)
