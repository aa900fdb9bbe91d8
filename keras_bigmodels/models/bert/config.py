"""BERT, RoBERTa and ALBERT presets: paper / released-checkpoint configs, random init."""

from keras_bigmodels.presets import register_presets

_TURC = ("Turc et al. 2019, 'Well-Read Students Learn Better', the 24 compact BERTs "
         "released in google-research/bert")
_BERT = "Devlin et al. 2019, table/section 3 and the released {} config.json"
_ROBERTA = "Liu et al. 2019 (RoBERTa), released fairseq/HF {} config (padding_idx=1)"
_ALBERT = "Lan et al. 2020 (ALBERT), table 1 and the released HF {}-v2 config"


def _bert(num_layers, hidden_dim, num_heads, vocabulary_size=30522, source=""):
    return {
        "vocabulary_size": vocabulary_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "max_sequence_length": 512,
        "num_segments": 2,
        "dropout": 0.1,
        "source": source,
    }


def _roberta(num_layers, hidden_dim, num_heads, source):
    config = _bert(num_layers, hidden_dim, num_heads, vocabulary_size=50265, source=source)
    # HF's roberta tables have 514 rows: positions start after padding_idx=1.
    config.update(num_segments=1, position_offset=2, layer_norm_epsilon=1e-5)
    return config


def _albert(num_layers, hidden_dim, num_heads, intermediate_dim, source):
    config = _bert(num_layers, hidden_dim, num_heads, vocabulary_size=30000, source=source)
    config.update(
        intermediate_dim=intermediate_dim,
        embedding_dim=128,
        share_layers=True,
        activation="gelu_approximate",
        dropout=0.0,
    )
    return config


BERT_PRESETS = {
    "bert-tiny": _bert(2, 128, 2, source=_TURC + " (L=2, H=128)"),
    "bert-mini": _bert(4, 256, 4, source=_TURC + " (L=4, H=256)"),
    "bert-small": _bert(4, 512, 8, source=_TURC + " (L=4, H=512)"),
    "bert-base-uncased": _bert(12, 768, 12, source=_BERT.format("bert-base-uncased")),
    "bert-base-cased": _bert(12, 768, 12, vocabulary_size=28996,
                             source=_BERT.format("bert-base-cased")),
    "bert-large-uncased": _bert(24, 1024, 16, source=_BERT.format("bert-large-uncased")),
    "roberta-base": _roberta(12, 768, 12, _ROBERTA.format("roberta-base")),
    "roberta-large": _roberta(24, 1024, 16, _ROBERTA.format("roberta-large")),
    "albert-base": _albert(12, 768, 12, 3072, _ALBERT.format("albert-base")),
    "albert-large": _albert(24, 1024, 16, 4096, _ALBERT.format("albert-large")),
    "albert-xlarge": _albert(24, 2048, 16, 8192, _ALBERT.format("albert-xlarge")),
    "albert-xxlarge": _albert(12, 4096, 64, 16384, _ALBERT.format("albert-xxlarge")),
}


def bert_params(config):
    """Exact `count_params()` of a `BertBackbone` config (pooler included); never allocates."""
    hidden = config["hidden_dim"]
    embedding = config.get("embedding_dim") or hidden
    intermediate = config["intermediate_dim"]
    positions = config.get("max_sequence_length", 512) + (config.get("position_offset") or 0)
    total = (config["vocabulary_size"] + positions + config.get("num_segments", 2)) * embedding
    total += 2 * embedding  # embedding LayerNorm
    if embedding != hidden:
        total += embedding * hidden + hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden * intermediate + intermediate + hidden
    layer += 4 * hidden  # two LayerNorms
    total += layer * (1 if config.get("share_layers") else config["num_layers"])
    return total + hidden * hidden + hidden  # pooler


register_presets("bert", BERT_PRESETS, param_counter=bert_params)
