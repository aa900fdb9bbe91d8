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
    """A random-init transformers BART, every norm, bias and final_logits_bias perturbed."""
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
            if "norm" in name or name.endswith(".bias"):
                parameter.add_(torch.randn_like(parameter) * 0.3)
                perturbed += 1
        reference.final_logits_bias.add_(torch.randn_like(reference.final_logits_bias))
    # Norm weights and biases: 2 embedding norms + 2 per encoder block + 3 per decoder
    # block; projection biases: 6 per encoder block (q, k, v, out, fc1, fc2), 10 per decoder.
    assert perturbed == 2 * (2 + 2 * 2 + 3 * 2) + 2 * 6 + 2 * 10
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


# ---- BartSeq2SeqLM ------------------------------------------------------------------

@pytest.fixture(scope="module")
def lively_checkpoint(tmp_path_factory):
    """A transformers BART with large random weights, so greedy and beam outputs vary."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=MAX_POSITIONS, init_std=1.0)
    torch.manual_seed(1)
    reference = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                parameter.add_(torch.randn_like(parameter) * 0.3)
        reference.final_logits_bias.add_(torch.randn_like(reference.final_logits_bias) * 0.1)
    path = tmp_path_factory.mktemp("bart_lively")
    reference.save_pretrained(path)
    return path, reference


def _hf_generate(reference, rows, max_new_tokens, num_beams, eos_token_id=None):
    import torch

    width = max(len(r) for r in rows)
    ids = np.ones((len(rows), width), "int64")
    mask = np.zeros((len(rows), width), "int64")
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    with torch.no_grad():
        out = reference.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=num_beams, eos_token_id=eos_token_id, pad_token_id=1,
            forced_eos_token_id=None, forced_bos_token_id=None, no_repeat_ngram_size=0,
            min_length=0, length_penalty=1.0, early_stopping=True)
    return out.numpy()[:, 1:]  # drop the decoder start token


def test_task_logits_match_transformers(checkpoint):
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    path, reference = checkpoint
    lm = BartSeq2SeqLM.from_huggingface(path)
    assert (lm.decoder_start_token_id, lm.eos_token_id, lm.pad_token_id) == (2, 2, 1)
    inputs = _inputs(seed=3)
    assert_close(lm(inputs), _reference_logits(reference, inputs), atol=1e-4, rtol=1e-4)


def test_greedy_and_beam_equal_transformers(lively_checkpoint):
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    path, reference = lively_checkpoint
    lm = BartSeq2SeqLM.from_huggingface(path)
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(3, VOCAB, 9), 2], [0, *rng.integers(3, VOCAB, 5), 2],
            [0, *rng.integers(3, VOCAB, 7), 2]]
    greedy = lm.generate(rows, max_new_tokens=8, stop_token_ids=None)
    expected = _hf_generate(reference, rows, 8, num_beams=1)
    np.testing.assert_array_equal(np.asarray(greedy), expected)
    assert len({tuple(r) for r in greedy}) > 1  # the outputs are not one degenerate string
    beam = lm.generate(rows, max_new_tokens=8, stop_token_ids=None, sampler="beam", num_beams=3)
    np.testing.assert_array_equal(np.asarray(beam), _hf_generate(reference, rows, 8, 3))


def test_fit_lowers_the_loss_on_denoising_and_saves(tmp_path):
    from keras_bigmodels.models.bart import BartSeq2SeqLM
    from keras_bigmodels.objectives.denoising import BartDenoising

    backbone = BartBackbone(**{**TINY, "max_sequence_length": 16}, dropout=0.0)
    lm = BartSeq2SeqLM(backbone)
    lm.compile(optimizer=keras.optimizers.Adam(3e-3))
    rng = np.random.default_rng(0)
    # Documents drawn from a few fixed sentences: learnable to reconstruct from noise.
    sentences = [list(rng.integers(5, VOCAB, 12)) for _ in range(4)]
    documents = [sentences[i % 4] for i in range(64)]
    data = BartDenoising(documents, max_length=16, mask_token_id=3, seed=0)
    x, y, weight = data.batch(np.arange(64), epoch=0)
    history = lm.fit(x, y, sample_weight=weight, batch_size=16, epochs=12, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses

    restored = assert_saved_model_matches(lm, {k: v[:2] for k, v in x.items()}, tmp_path)
    assert isinstance(restored, BartSeq2SeqLM) and restored.pad_token_id == 1
    rows = [list(r[m.astype(bool)]) for r, m in zip(x["encoder_token_ids"][:2],
                                                     x["encoder_padding_mask"][:2])]
    assert restored.generate(rows, max_new_tokens=5) == lm.generate(rows, max_new_tokens=5)


def test_task_bad_inputs_raise_clear_errors():
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    lm = BartSeq2SeqLM(BartBackbone(**TINY))
    with pytest.raises(ValueError, match="max_sequence_length=24"):
        lm.generate([list(range(3, 3 + MAX_POSITIONS + 1))], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.generate([[0, VOCAB + 5, 2]], max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        lm.generate([[0, 5], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        BartSeq2SeqLM(BartBackbone(**TINY), decoder_start_token_id=VOCAB)
    with pytest.raises(ValueError, match="decoder's"):
        lm.generate([[0, 5, 2]], max_new_tokens=MAX_POSITIONS)
    x = _inputs()
    x["decoder_token_ids"][0, 0] = -1
    with pytest.raises(ValueError, match="decoder_token_ids"):
        lm.fit(x, x["decoder_token_ids"].clip(0), epochs=1, verbose=0)


def test_every_matrix_shards_with_the_rule_table():
    from keras_bigmodels.distribution import logical_axes

    backbone = BartBackbone(**{**TINY, "num_layers": 1})
    for variable in backbone.weights:
        if len(variable.shape) >= 2 and "position_embedding" not in variable.path:
            assert logical_axes(variable.path) is not None, variable.path
    assert logical_axes("decoder_layer_0/cross_attention/key/kernel") == ("embed", "heads", "kv")


def test_bart_model_directory_with_fewer_decoder_layers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=MAX_POSITIONS)
    torch.manual_seed(2)
    reference = transformers.BartModel(config).eval()  # no task prefix, no head
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                parameter.add_(torch.randn_like(parameter) * 0.3)
    reference.save_pretrained(tmp_path)
    backbone = BartBackbone.from_huggingface(tmp_path)
    assert backbone.num_layers == 1 and len(backbone.encoder_layers) == 2
    inputs = _inputs()
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(inputs["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["encoder_padding_mask"]),
            decoder_input_ids=torch.tensor(inputs["decoder_token_ids"], dtype=torch.long),
            decoder_attention_mask=torch.tensor(inputs["decoder_padding_mask"]),
        ).last_hidden_state.numpy()
    assert_close(backbone(inputs)["decoder_sequence_output"], expected, atol=1e-4)


def test_fused_output_loss_trains_exactly_like_the_logits_loss():
    """One SGD step through the fused output layer (shared table + final_logits_bias in
    `linear_cross_entropy`, forced on every backend) gives the logits path's loss and
    updated weights, i.e. the same gradients; a nonzero bias makes its omission show."""
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    x = _inputs(batch=4, source=11, target=7, seed=3)
    rng = np.random.default_rng(4)
    y = rng.integers(3, VOCAB, (4, 7)).astype("int32")
    weights = x["decoder_padding_mask"].astype("float32")
    bias = (rng.normal(size=(VOCAB,)) * 3).astype("float32")
    models, losses = [], []
    for fused in (True, False):
        keras.utils.set_random_seed(0)
        lm = BartSeq2SeqLM(BartBackbone(**TINY, dropout=0.0))
        lm.backbone.final_logits_bias.bias.assign(bias)
        lm.compile(optimizer=keras.optimizers.SGD(0.5), fused_loss=fused)
        assert lm._fused_loss == fused
        history = lm.fit(x, y, sample_weight=weights, batch_size=4, epochs=1, verbose=0,
                         shuffle=False)
        models.append(lm)
        losses.append(history.history["loss"][0])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=2e-5, rtol=1e-4)
    table = to_numpy(models[0].backbone.token_embedding.embeddings)
    keras.utils.set_random_seed(0)
    initial = to_numpy(BartSeq2SeqLM(BartBackbone(**TINY, dropout=0.0))
                       .backbone.token_embedding.embeddings)
    assert np.abs(table - initial).max() > 1e-4  # the step moved the output table
    # The bias is a non-trainable buffer, as in transformers: the step leaves it alone.
    np.testing.assert_array_equal(to_numpy(models[0].backbone.final_logits_bias.bias), bias)
    # Without the bias the fused loss would differ: the test sees a dropped bias.
    from keras_bigmodels.losses import linear_cross_entropy

    hidden = models[1].backbone(x)["decoder_sequence_output"]
    table_now = models[1].backbone.token_embedding.embeddings
    with_bias = linear_cross_entropy(hidden, table_now, y, weights,
                                     bias=models[1].backbone.final_logits_bias.bias)
    without = linear_cross_entropy(hidden, table_now, y, weights)
    assert abs(float(to_numpy(with_bias)) - float(to_numpy(without))) > 1e-2


def test_decode_state_shared_with_t5_and_cross_keys_values_outside_the_beams(monkeypatch):
    """BART decodes through the shared encoder-decoder protocol: layer counts and the cache
    layout from `Seq2SeqBackboneMethods`, cross-attention keys/values made once per trace,
    beam search reordering only the self-attention caches; a decoder longer than the
    learned positions is refused by name."""
    from keras_bigmodels.layers.transformer import TransformerDecoderBlock
    from keras_bigmodels.models import seq2seq_lm
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    backbone = BartBackbone(**dict(TINY, num_decoder_layers=3, dropout=0.0))
    assert isinstance(backbone, seq2seq_lm.Seq2SeqBackboneMethods)
    assert (backbone.num_layers, backbone.head_dim) == (3, 8)
    with pytest.raises(ValueError, match="learned"):
        backbone.initial_cache(keras.ops.zeros((1, 4, 32)), None, MAX_POSITIONS + 1)

    lm = BartSeq2SeqLM(backbone)
    cross_calls, beam_states = [], []
    original_cache = TransformerDecoderBlock.cross_attention_cache
    original_beam = seq2seq_lm.beam_search
    monkeypatch.setattr(TransformerDecoderBlock, "cross_attention_cache",
                        lambda block, x: cross_calls.append(1) or original_cache(block, x))
    monkeypatch.setattr(seq2seq_lm, "beam_search", lambda fn, cache, *a, **k: (
        beam_states.append([tuple(x.shape) for x in keras.tree.flatten(cache)])
        or original_beam(fn, cache, *a, **k)))
    lm.generate([[0, 5, 6, 7, 2], [0, 9, 2]], max_new_tokens=4, sampler="beam", num_beams=2,
                stop_token_ids=None)
    assert len(cross_calls) == 3 * lm.generate_traces
    assert beam_states and all(shapes == [(2, 2, 4, 5, 8)] * 3 for shapes in beam_states)
