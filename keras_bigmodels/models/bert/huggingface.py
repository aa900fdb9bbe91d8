"""Weights of local Hugging Face BERT / RoBERTa / ALBERT checkpoints onto our variables."""

import warnings

from keras_bigmodels.checkpoints import (WeightLoader, activation, check_model_type, dense,
                                         embedding, encoder_block, norm, read_checkpoint)

SUPPORTED = ("bert", "roberta", "albert")
PREFIXES = ("bert.", "roberta.", "albert.")
# Heads of task checkpoints that a backbone does not build; tied decoders are the table.
HEAD_WEIGHTS = (r"cls\..*", r"lm_head\..*", r"predictions\..*", r"sop_classifier\..*",
                r"classifier\..*", r"qa_outputs\..*", r"dropout.*")
TIED_DECODERS = (r"cls\.predictions\.decoder\..*", r"lm_head\.decoder\..*",
                 r"predictions\.decoder\..*")


# A block's module names, in `checkpoints.ENCODER_BLOCK_PARTS` order.
BERT_BLOCK = ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
              "output.dense", "output.LayerNorm")
ALBERT_BLOCK = ("attention.query", "attention.key", "attention.value", "attention.dense",
                "attention.LayerNorm", "ffn", "ffn_output", "full_layer_layer_norm")


def model_type(hf_config):
    return check_model_type(hf_config, SUPPORTED, "BertBackbone.from_huggingface")


def backbone_kwargs(hf_config):
    """Our constructor kwargs for an HF config.json dict, honouring eps, activation, positions."""
    kind = model_type(hf_config)
    position_type = hf_config.get("position_embedding_type") or "absolute"
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported; only 'absolute'."
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
        activation=activation(hf_config),
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


def assign_backbone(backbone, loader, kind, warn_missing_pooler=True):
    emb = backbone.embeddings
    embedding(loader, emb.token_embedding, "embeddings.word_embeddings")
    embedding(loader, emb.position_embedding, "embeddings.position_embeddings")
    embedding(loader, emb.segment_embedding, "embeddings.token_type_embeddings")
    norm(loader, emb.embedding_norm, "embeddings.LayerNorm")
    if kind == "albert":
        dense(loader, emb.embedding_projection, "encoder.embedding_hidden_mapping_in")
        blocks = [(backbone.transformer_layers[0],
                   "encoder.albert_layer_groups.0.albert_layers.0")]
        names, pooler = ALBERT_BLOCK, "pooler"
    else:
        blocks = [(block, f"encoder.layer.{i}")
                  for i, block in enumerate(backbone.transformer_layers)]
        names, pooler = BERT_BLOCK, "pooler.dense"
    for block, prefix in blocks:
        encoder_block(loader, block, prefix, names)
    if f"{pooler}.weight" in loader or f"{pooler}.bias" in loader:
        dense(loader, backbone.pooler, pooler)
    elif warn_missing_pooler:
        # *ForMaskedLM checkpoints are saved without a pooler; HF leaves it random too.
        warnings.warn(
            "The checkpoint has no pooler weights (e.g. a *ForMaskedLM checkpoint); "
            "`pooled_output` comes from a randomly initialized pooler.", stacklevel=3
        )


def make_loader(weights, ignore=()):
    return WeightLoader(weights, prefixes=PREFIXES, ignore=ignore)


def build_backbone(hf_config, dtype=None, overrides=None, cls=None):
    """A random-init `cls` (default BertBackbone) of the checkpoint's architecture."""
    from keras_bigmodels.models.bert.backbone import BertBackbone

    cls = cls or BertBackbone
    return cls(**{**backbone_kwargs(hf_config), **(overrides or {})}, dtype=dtype)


def load_backbone(cls, path, dtype=None, **overrides):
    hf_config, weights = read_checkpoint(path)
    kind = model_type(hf_config)
    backbone = build_backbone(hf_config, dtype, overrides, cls=cls)
    loader = make_loader(weights, ignore=HEAD_WEIGHTS)
    assign_backbone(backbone, loader, kind)
    loader.finish()
    return backbone


def check_architecture(hf_config, path, supported, reader):
    """ValueError unless config.json's `architectures` (when given) are all `supported`."""
    unsupported = [a for a in hf_config.get("architectures") or [] if a not in supported]
    if unsupported:
        raise ValueError(
            f"`{path}` holds a {unsupported[0]} checkpoint; {reader} reads "
            f"{', '.join(supported)}. Load other checkpoints with "
            "BertBackbone.from_huggingface and fine-tune a head on it."
        )


def head_dropout(hf_config):
    """The dropout HF puts before a fine-tuning head (its classifier_dropout rule)."""
    names = ("classifier_dropout_prob", "classifier_dropout", "hidden_dropout_prob")
    values = [hf_config.get(n) for n in names if hf_config.get(n) is not None]
    return values[0] if values else 0.1


MLM_HEAD_NAMES = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias"),
}
SENTENCE_HEAD_NAMES = {"bert": "cls.seq_relationship", "albert": "sop_classifier.classifier"}


def assign_mlm_head(head, loader, kind):
    dense_name, norm_name, bias_name = MLM_HEAD_NAMES[kind]
    dense(loader, head.dense, dense_name)
    norm(loader, head.norm, norm_name)
    loader.assign(head.bias, bias_name)


# Fine-tuning checkpoints whose head is one Linear on the sequence output.
TOKEN_CLASSIFIERS = ("BertForTokenClassification", "RobertaForTokenClassification",
                     "AlbertForTokenClassification")
QUESTION_ANSWERERS = ("BertForQuestionAnswering", "RobertaForQuestionAnswering",
                      "AlbertForQuestionAnswering")


def read_task_checkpoint(path, architectures, head_name, reader):
    """(hf_config, kind, loader) of a fine-tuning checkpoint whose head is `head_name`.

    Args:
        path: the checkpoint directory.
        architectures: the HF classes the task reads (config.json's `architectures`).
        head_name: the head module the checkpoint must hold (e.g. "qa_outputs"), or
            {model_type: name} where the families name it differently.
        reader: the entry point, for messages.
    """
    hf_config, weights = read_checkpoint(path)
    kind = model_type(hf_config)
    check_architecture(hf_config, path, architectures, reader)
    if isinstance(head_name, dict):
        head_name = head_name[kind]
    loader = make_loader(weights)
    if f"{head_name}.weight" not in loader:
        raise ValueError(f"`{path}` has no `{head_name}.weight`: not a {kind} checkpoint of "
                         f"{', '.join(architectures)}.")
    return hf_config, kind, loader


def assign_sequence_head_task(model, loader, kind, head_name):
    """The backbone and the one-Linear head `head_name` of a token classifier or QA model."""
    # These checkpoints are saved without a pooler (HF builds none for them).
    assign_backbone(model.backbone, loader, kind, warn_missing_pooler=False)
    dense(loader, model.get_layer(head_name), head_name)
    loader.finish()
    return model
