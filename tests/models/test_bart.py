import json
import os

import keras
import numpy as np
import pytest

from keras_bigmodels import flops
from keras_bigmodels.models.bart import BartBackbone
from keras_bigmodels.models.bart.config import PRESETS, count_bart_params
from tests.testing import assert_close, assert_saved_model_matches, to_numpy

VOCAB, MAX_POSITIONS = 99, 24
TINY = dict(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=32,
            intermediate_dim=64, max_sequence_length=MAX_POSITIONS)


def _inputs(batch=2, source=11, target=7, seed=0):
    rng = np.random.default_rng(seed)
    encoder_mask = np.ones((batch, source), "int32")
    encoder_mask[-1, source - 3:] = 0
    decoder_mask = np.ones((batch, target), "int32")
    decoder_mask[-1, target - 2:] = 0
    return {
        "encoder_token_ids": rng.integers(3, VOCAB, (batch, source)).astype("int32"),
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": rng.integers(3, VOCAB, (batch, target)).astype("int32"),
        "decoder_padding_mask": decoder_mask,
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init transformers BART, every layer norm and final_logits_bias perturbed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=MAX_POSITIONS, dropout=0.0)
    torch.manual_seed(0)
    reference = transformers.BartForConditionalGeneration(config).eval()
    perturbed = 0
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
                perturbed += 1
        reference.final_logits_bias.add_(torch.randn_like(reference.final_logits_bias))
    # 2 embedding norms + 2 per encoder block + 3 per decoder block, weight and bias each.
    assert perturbed == 2 * (2 + 2 * 2 + 3 * 2)
    path = tmp_path_factory.mktemp("bart")
    reference.save_pretrained(path)
    return path, reference


def _reference_logits(reference, inputs):
    import torch

    with torch.no_grad():
        return reference(
            input_ids=torch.tensor(inputs["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["encoder_padding_mask"]),
            decoder_input_ids=torch.tensor(inputs["decoder_token_ids"], dtype=torch.long),
            decoder_attention_mask=torch.tensor(inputs["decoder_padding_mask"]),
        ).logits.numpy()


def test_presets_count_as_transformers_plus_final_logits_bias():
    # transformers counts 139,420,416 for bart-base (shared table once; its
    # final_logits_bias is a buffer). Ours also holds that bias as a non-trainable weight.
    assert count_bart_params(PRESETS["bart-base"], include_final_logits_bias=False) == 139420416
    assert flops.count_params("bart-base") == 139420416 + 50265
    assert count_bart_params(PRESETS["bart-large"], include_final_logits_bias=False) == 406291456
    assert flops.count_params("bart-large") == 406291456 + 50265


@pytest.mark.parametrize("overrides", [{}, {"num_decoder_layers": 3}, {"scale_embedding": True}])
def test_analytic_count_equals_count_params(overrides):
    backbone = BartBackbone(**TINY, **overrides)
    assert count_bart_params({**TINY, **overrides}) == backbone.count_params()
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    assert trainable == count_bart_params({**TINY, **overrides}, include_final_logits_bias=False)


def test_huggingface_parity(checkpoint):
    path, reference = checkpoint
    backbone = BartBackbone.from_huggingface(path)
    inputs = _inputs()
    outputs = backbone(inputs)
    logits = to_numpy(backbone.logits(outputs["decoder_sequence_output"]))
    expected = _reference_logits(reference, inputs)
    assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    # The perturbed bias is loaded (a swapped or missing weight would show above too).
    np.testing.assert_allclose(to_numpy(backbone.final_logits_bias.bias),
                               reference.final_logits_bias.numpy()[0])
    # Counts agree with transformers' on the same config (plus the bias buffer).
    assert backbone.count_params() == sum(p.numel() for p in reference.parameters()) + VOCAB


def test_huggingface_rejects_other_model_types(checkpoint, tmp_path):
    path, _ = checkpoint
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as source:
            data = source.read()
        with open(os.path.join(tmp_path, name), "wb") as target:
            target.write(data)
    with open(os.path.join(tmp_path, "config.json")) as f:
        config = json.load(f)
    config["model_type"] = "mbart"
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="model_type 'mbart'"):
        BartBackbone.from_huggingface(tmp_path)


def test_bad_inputs_raise_clear_errors():
    backbone = BartBackbone(**TINY)
    too_long = _inputs(source=MAX_POSITIONS + 1)
    with pytest.raises(ValueError, match="encoder_token_ids.*max_sequence_length=24"):
        backbone(too_long)
    outside = _inputs()
    outside["encoder_token_ids"][0, 0] = VOCAB
    with pytest.raises(ValueError, match="outside the vocabulary"):
        backbone(outside)
    with pytest.raises(ValueError, match="hidden_dim"):
        BartBackbone(**{**TINY, "num_heads": 5})


def test_positions_start_at_row_two_and_padding_does_not_leak():
    backbone = BartBackbone(**TINY, dropout=0.0)
    inputs = _inputs()
    table = backbone.encoder_embedding.position_embedding.embeddings
    assert tuple(table.shape) == (MAX_POSITIONS + 2, 32)
    # Rows 0 and 1 are never read: changing them changes nothing.
    before = to_numpy(backbone(inputs)["decoder_sequence_output"])
    values = to_numpy(table)
    values[:2] += 5.0
    table.assign(values)
    assert_close(backbone(inputs)["decoder_sequence_output"], before, atol=1e-6)
    # Encoder padding never reaches real positions.
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["encoder_token_ids"][-1, -3:] = 5
    after = to_numpy(backbone(changed)["decoder_sequence_output"])
    assert_close(after, before, atol=1e-5)


def test_config_and_keras_round_trip(tmp_path):
    backbone = BartBackbone(**TINY, num_decoder_layers=1, dropout=0.0)
    backbone.final_logits_bias.bias.assign(np.arange(VOCAB, dtype="float32"))
    restored = assert_saved_model_matches(backbone, _inputs(), tmp_path)
    np.testing.assert_array_equal(to_numpy(restored.final_logits_bias.bias), np.arange(VOCAB))
    assert restored.num_layers == 1 and restored.count_params() == backbone.count_params()
    assert isinstance(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(backbone)), BartBackbone)
