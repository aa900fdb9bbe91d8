import keras
import numpy as np
import pytest

from keras_bigmodels import flops
from keras_bigmodels.layers import (
    TransformerDecoderBlock,
    TransformerEmbedding,
    TransformerEncoderBlock,
    make_norm,
)


def build(config):
    """A generic Transformer stack from foundation layers, shaped by `config`."""
    ids = keras.Input((None,), dtype="int32")
    x = TransformerEmbedding(
        config["vocabulary_size"], config["hidden_dim"], config["max_sequence_length"],
        num_segments=config.get("num_segments", 0), embedding_dim=config.get("embedding_dim"),
        position=config.get("position", "learned"),
        layer_norm=config.get("embedding_layer_norm", False),
    )(ids)
    block_cls = TransformerDecoderBlock if config.get("cross_attention") else TransformerEncoderBlock
    memory = keras.Input((None, config["hidden_dim"])) if config.get("cross_attention") else None
    for _ in range(config["num_layers"]):
        block = block_cls(
            num_heads=config["num_heads"], intermediate_dim=config["intermediate_dim"],
            key_dim=config.get("key_dim"), num_key_value_heads=config.get("num_key_value_heads"),
            gated=config.get("gated", False), use_bias=config.get("use_bias", True),
            norm=config.get("norm", "layer_norm"),
        )
        x = block(x, memory) if memory is not None else block(x)
    if config.get("final_norm"):
        x = make_norm(config.get("norm", "layer_norm"), 1e-5, "final_norm",
                      use_bias=config.get("use_bias", True))(x)
    inputs = [ids, memory] if memory is not None else ids
    return keras.Model(inputs, x)


CONFIGS = [
    dict(vocabulary_size=100, hidden_dim=32, num_layers=2, num_heads=4, intermediate_dim=64,
         max_sequence_length=16, final_norm=True),
    dict(vocabulary_size=90, hidden_dim=32, num_layers=1, num_heads=4, intermediate_dim=48,
         max_sequence_length=16, num_segments=2, embedding_dim=8, embedding_layer_norm=True),
    dict(vocabulary_size=50, hidden_dim=24, num_layers=2, num_heads=6, num_key_value_heads=2,
         key_dim=8, intermediate_dim=40, max_sequence_length=8, gated=True, use_bias=False,
         norm="rms_norm", position=None, final_norm=True),
    dict(vocabulary_size=60, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
         max_sequence_length=8, position="sinusoidal", cross_attention=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_count_params_equals_keras(config):
    assert flops.count_params(config) == build(config).count_params()


def test_gpt2_small_formula_and_flops_per_token():
    gpt2 = dict(vocabulary_size=50257, hidden_dim=768, num_layers=12, num_heads=12,
                intermediate_dim=3072, max_sequence_length=1024, final_norm=True)
    assert flops.count_params(gpt2) == 124_439_808
    n = 124_439_808 - 1024 * 768
    assert flops.flops_per_token(gpt2, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_bad_config_errors():
    with pytest.raises(ValueError, match="preset name or a config dict"):
        flops.count_params(3)
    with pytest.raises(ValueError, match="Unknown preset 'no-such-model'"):
        flops.count_params("no-such-model")


def test_mfu_callback_reports_rates():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    callback = flops.MFUCallback(flops_per_token=100.0, tokens_per_batch=8, peak_flops=1e9)
    history = model.fit(np.zeros((64, 4)), np.zeros((64, 2)), batch_size=8, epochs=1, verbose=0,
                        callbacks=[callback])
    assert history.history["tokens_per_second"][0] > 0
    assert 0 < history.history["mfu"][0] < 1


def test_family_counters_answer_per_token_and_per_example(monkeypatch):
    # A family registered with a counter of (FLOPs, tokens) per example answers both;
    # one without falls back to the sequence formula.
    monkeypatch.setitem(flops._FLOPS_COUNTERS, "pair_of_streams",
                        lambda config, length: (1000 * length, 2 * length))
    config = {"family": "pair_of_streams"}
    assert flops.flops_per_example(config, 5) == 5000
    assert flops.flops_per_token(config, 5) == 500  # 5000 over 2 x 5 tokens
    gpt2 = dict(vocabulary_size=50257, hidden_dim=768, num_layers=12, num_heads=12,
                intermediate_dim=3072, max_sequence_length=1024, final_norm=True)
    assert flops.flops_per_example(gpt2, 1024) == 1024 * flops.flops_per_token(gpt2, 1024)
    assert flops.stack_flops(10, 2, 4, 3) == 6 * 10 * 3 + 12 * 2 * 4 * 3 * 3
    assert flops.stack_flops(10, 2, 4, 3, key_tokens=7) == 6 * 10 * 3 + 12 * 2 * 4 * 3 * 7
    with pytest.raises(ValueError, match="counter"):
        flops.register_flops_counter("pair_of_streams", 3)


@pytest.mark.parametrize("name, tokens", [
    ("clip-vit-base-patch32", 49 + 1 + 48), ("clip-vit-base-patch16", 196 + 1 + 48),
    ("clip-vit-large-patch14", 256 + 1 + 48), ("univl-base", 48 + 48 + 48)])
def test_multi_stream_presets_answer_without_allocating(name, tokens):
    # Per token is per example over every stream's tokens (image patches + [CLS] and
    # text for CLIP; text, frames and caption for UniVL at length 48).
    per_example = flops.flops_per_example(name, 48)
    assert flops.flops_per_token(name, 48) == pytest.approx(per_example / tokens)
    assert 2 * flops.count_params(name) < per_example / tokens < 6 * flops.count_params(name)
