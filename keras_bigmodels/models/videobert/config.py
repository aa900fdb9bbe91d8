"""VideoBERT presets: BERT's encoder over word pieces plus visual words, random init."""

from keras_bigmodels.models.bert.config import bert_params
from keras_bigmodels.presets import register_presets

_SOURCE = ("Sun et al. 2019, 'VideoBERT: A Joint Model for Video and Language Representation "
           "Learning', section 4.2: initialized from {} (30,522 word pieces), plus "
           "12^4 = 20,736 visual words from hierarchical k-means of S3D clip features")


def _videobert(num_layers, hidden_dim, num_heads, source):
    return {
        "text_vocabulary_size": 30522,
        "visual_vocabulary_size": 12 ** 4,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "max_sequence_length": 512,
        "num_segments": 2,
        "dropout": 0.1,
        "source": source,
    }


VIDEOBERT_PRESETS = {
    # The paper's model: BERT-large with the visual words appended to its vocabulary.
    "videobert-large": _videobert(24, 1024, 16, _SOURCE.format("BERT-large uncased")),
    # The same construction on BERT-base, for smaller runs.
    "videobert-base": _videobert(12, 768, 12, _SOURCE.format("BERT-base uncased")),
}


def videobert_params(config):
    """Exact `count_params()` of a `VideoBERTBackbone` config; never allocates."""
    config = dict(config)
    config["vocabulary_size"] = (config.pop("text_vocabulary_size")
                                 + config.pop("visual_vocabulary_size"))
    return bert_params(config)


register_presets("videobert", VIDEOBERT_PRESETS, param_counter=videobert_params)
