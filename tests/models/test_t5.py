import json

import numpy as np
import pytest
import keras

from keras_bigmodels import flops
from keras_bigmodels.layers import RelativePositionBias, make_norm
from keras_bigmodels.models.t5 import T5Backbone
from keras_bigmodels.models.t5.config import PRESETS, count_t5_params
from tests.testing import assert_close, to_numpy

VOCAB = 97
SMALL = dict(vocabulary_size=VOCAB, num_layers=2, num_decoder_layers=3, num_heads=4,
             hidden_dim=32, key_dim=6, intermediate_dim=48, relative_attention_num_buckets=8,
             relative_attention_max_distance=20, dropout=0.0)
V1_0 = dict(SMALL, activation="relu", gated=False, tie_embeddings=True)
V1_1 = dict(SMALL, activation="gelu_approximate", gated=True, tie_embeddings=False)

# transformers' parameter counts of T5ForConditionalGeneration for the published configs
# (built on the meta device, output layer untied where the released config says
# tie_word_embeddings=false).
PUBLISHED_COUNTS = {
    "t5-small": 60_506_624, "t5-base": 222_903_552, "t5-large": 737_668_096,
    "t5-v1_1-small": 76_961_152, "t5-v1_1-base": 247_577_856,
    "flan-t5-small": 76_961_152, "flan-t5-base": 247_577_856,
    "mt5-small": 300_176_768, "mt5-base": 582_401_280,
}


def backbone_inputs(batch=2, source=9, target=7, seed=0, padded=True):
    rng = np.random.default_rng(seed)
    encoder_mask = np.ones((batch, source), "int32")
    decoder_mask = np.ones((batch, target), "int32")
    if padded:
        encoder_mask[0, -3:] = 0
        decoder_mask[1, -2:] = 0
    return {
        "encoder_token_ids": rng.integers(2, VOCAB, (batch, source)).astype("int32"),
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": rng.integers(2, VOCAB, (batch, target)).astype("int32"),
        "decoder_padding_mask": decoder_mask,
    }


# Presets and counts ---------------------------------------------------------------------
def test_published_counts_analytically():
    assert set(PUBLISHED_COUNTS) <= set(PRESETS)
    for name, expected in PUBLISHED_COUNTS.items():
        assert flops.count_params(name) == expected, name
    assert PRESETS["mt5-base"]["vocabulary_size"] == 250_112


@pytest.mark.parametrize("config", [V1_0, V1_1, dict(V1_1, encoder_only=True),
                                    dict(V1_0, num_decoder_layers=None)])
def test_analytic_count_equals_count_params(config):
    assert T5Backbone(**config).count_params() == count_t5_params(config)


def test_dropout_everywhere_transformers_applies_it():
    backbone = T5Backbone(**dict(V1_1, dropout=0.1))
    block = backbone.decoder_layers[0]
    assert backbone.encoder_dropout.rate == backbone.decoder_dropout.rate == 0.1
    assert block.dropout_layer.rate == block.self_attention.dropout == 0.1
    assert block.cross_attention.dropout == block.feedforward.dropout == 0.1
    inputs = backbone_inputs(padded=False)
    first = to_numpy(backbone(inputs, training=True)["decoder_sequence_output"])
    second = to_numpy(backbone(inputs, training=True)["decoder_sequence_output"])
    assert not np.allclose(first, second)
    assert_close(backbone(inputs)["decoder_sequence_output"],
                 backbone(inputs)["decoder_sequence_output"], atol=0)


def test_rule_table_names_every_matrix():
    from keras_bigmodels import distribution

    backbone = T5Backbone(**V1_1)
    for variable in backbone.weights:
        axes = distribution.logical_axes(variable.path)
        assert (axes is None) == (len(variable.shape) == 1), variable.path
    assert distribution.logical_axes("decoder_relative_position_bias/embeddings") == (
        "relative_position", "heads")
    assert distribution.logical_axes("output_token_embedding/embeddings") == (
        "vocab", "table_embed")


def test_small_preset_builds_with_its_analytic_count():
    # The smallest published T5 is built once (60M parameters, about 240 MB).
    backbone = T5Backbone.from_preset("t5-small")
    assert backbone.count_params() == flops.count_params("t5-small") == 60_506_624


# Layers against transformers ------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 50)])
def test_relative_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5Attention

    distances = np.arange(-1000, 1001, dtype="int32")
    expected = T5Attention._relative_position_bucket(
        torch.tensor(distances, dtype=torch.long), bidirectional=bidirectional,
        num_buckets=num_buckets, max_distance=max_distance).numpy()
    layer = RelativePositionBias(num_heads=2, num_buckets=num_buckets,
                                 max_distance=max_distance, bidirectional=bidirectional)
    actual = to_numpy(layer.bucket(keras.ops.convert_to_tensor(distances)))
    np.testing.assert_array_equal(actual, expected)


def test_rms_norm_equals_t5_layer_norm():
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32") * 3.0
    scale = np.random.default_rng(1).normal(1.0, 0.3, size=16).astype("float32")
    reference = T5LayerNorm(16, eps=1e-6)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(scale))
        expected = reference(torch.tensor(x)).numpy()
    norm = make_norm("rms_norm", 1e-6, "norm")
    norm.build(x.shape)
    norm.scale.assign(scale)
    assert len(norm.weights) == 1  # a scale only: no bias
    assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)
    # Half-precision inputs: the mean square is still taken in float32.
    half = to_numpy(norm(keras.ops.cast(x * 300.0, "bfloat16")))
    with torch.no_grad():
        expected_half = reference(torch.tensor(x * 300.0).bfloat16()).float().numpy()
    np.testing.assert_allclose(half.astype("float32"), expected_half, rtol=2e-2, atol=2e-2)


# Hugging Face parity --------------------------------------------------------------------
def hf_config(config, model_type="t5", **overrides):
    transformers = pytest.importorskip("transformers")
    config_class = transformers.MT5Config if model_type == "mt5" else transformers.T5Config
    kwargs = dict(
        vocab_size=config["vocabulary_size"], d_model=config["hidden_dim"],
        d_kv=config["key_dim"], d_ff=config["intermediate_dim"],
        num_layers=config["num_layers"], num_decoder_layers=config["num_decoder_layers"],
        num_heads=config["num_heads"],
        relative_attention_num_buckets=config["relative_attention_num_buckets"],
        relative_attention_max_distance=config["relative_attention_max_distance"],
        dropout_rate=0.0, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if config["gated"] else "relu",
        tie_word_embeddings=config["tie_embeddings"], decoder_start_token_id=0)
    kwargs.update(overrides)
    return config_class(**kwargs)


def save_hf_t5(path, config, seed=0, encoder_only=False, model_type="t5", release_head=True):
    """A random transformers T5 with every norm scale perturbed away from 1, saved with
    save_pretrained; an untied config gets its own lm_head.weight as released v1.1
    checkpoints have (transformers 5 would otherwise tie a fresh model's head)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    hf = hf_config(config, model_type)
    prefix = "MT5" if model_type == "mt5" else "T5"
    cls = getattr(transformers, prefix + ("EncoderModel" if encoder_only
                                          else "ForConditionalGeneration"))
    model = cls(hf).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.5 * torch.randn_like(parameter))
    model.save_pretrained(path)
    if not encoder_only and not config["tie_embeddings"] and release_head:
        weights = load_file(str(path / "model.safetensors"))
        weights["lm_head.weight"] = 0.3 * torch.randn_like(weights["shared.weight"])
        save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
        config_file = path / "config.json"
        saved = json.loads(config_file.read_text())
        # As the released v1.1 / mT5 / Flan-T5 config.json files say it.
        saved.pop("scale_decoder_outputs", None)
        saved["tie_word_embeddings"] = False
        config_file.write_text(json.dumps(saved))
    return cls.from_pretrained(path).eval()


def hf_logits(reference, inputs):
    import torch

    tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}
    with torch.no_grad():
        return reference(input_ids=tensors["encoder_token_ids"],
                         attention_mask=tensors["encoder_padding_mask"],
                         decoder_input_ids=tensors["decoder_token_ids"],
                         decoder_attention_mask=tensors["decoder_padding_mask"]).logits.numpy()


@pytest.mark.parametrize("config,model_type", [(V1_0, "t5"), (V1_1, "t5"), (V1_1, "mt5")],
                         ids=["v1_0", "v1_1", "mt5"])
def test_backbone_huggingface_parity(tmp_path, config, model_type):
    reference = save_hf_t5(tmp_path, config, model_type=model_type)
    assert type(reference).__name__.startswith(model_type.upper())
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model_type
    backbone = T5Backbone.from_huggingface(tmp_path)
    assert backbone.tie_embeddings == config["tie_embeddings"]
    assert backbone.scale_decoder_output == config["tie_embeddings"]
    assert backbone.gated == config["gated"]
    # Lengths past max_distance reach the logarithmic and the clamped buckets.
    inputs = backbone_inputs(source=26, target=23)
    outputs = backbone(inputs)
    logits = backbone.logits(outputs["decoder_sequence_output"])
    expected = hf_logits(reference, inputs)
    # Padded decoder positions are garbage in both; compare the real ones.
    real = inputs["decoder_padding_mask"].astype(bool)
    assert_close(to_numpy(logits)[real], expected[real], atol=1e-4)


def test_transformers_5_tied_unscaled_head(tmp_path):
    # transformers >= 5 ties a fresh v1.1 model's head to `shared` and writes
    # tie_word_embeddings=true with scale_decoder_outputs=false: tied, but not scaled.
    reference = save_hf_t5(tmp_path, V1_1, release_head=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    if saved.get("scale_decoder_outputs") is not False:
        pytest.skip("this transformers writes no scale_decoder_outputs")
    backbone = T5Backbone.from_huggingface(tmp_path)
    assert backbone.tie_embeddings and not backbone.scale_decoder_output
    inputs = backbone_inputs()
    real = inputs["decoder_padding_mask"].astype(bool)
    logits = backbone.logits(backbone(inputs)["decoder_sequence_output"])
    assert_close(to_numpy(logits)[real], hf_logits(reference, inputs)[real], atol=1e-4)


def test_encoder_only_huggingface_parity(tmp_path):
    torch = pytest.importorskip("torch")
    reference = save_hf_t5(tmp_path, V1_1, encoder_only=True)
    backbone = T5Backbone.from_huggingface(tmp_path)
    assert backbone.encoder_only and backbone.count_params() == sum(
        p.numel() for p in reference.parameters())
    inputs = backbone_inputs(source=11)
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(inputs["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["encoder_padding_mask"])).last_hidden_state
    encoder_inputs = {k: inputs[k] for k in ("encoder_token_ids", "encoder_padding_mask")}
    actual = backbone(encoder_inputs)["encoder_sequence_output"]
    assert_close(actual, expected.numpy(), atol=1e-4)


def test_encoder_of_a_full_checkpoint(tmp_path):
    reference = save_hf_t5(tmp_path, V1_0)
    import torch

    encoder = T5Backbone.from_huggingface(tmp_path, encoder_only=True)
    inputs = backbone_inputs(source=8)
    with torch.no_grad():
        expected = reference.encoder(
            input_ids=torch.tensor(inputs["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["encoder_padding_mask"])).last_hidden_state
    actual = encoder.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
    assert_close(actual, expected.numpy(), atol=1e-4)


def test_huggingface_errors(tmp_path):
    save_hf_t5(tmp_path, V1_0)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "model_type": "bart"}))
    with pytest.raises(ValueError, match="model_type 'bart'"):
        T5Backbone.from_huggingface(tmp_path)
    config_file.write_text(json.dumps({**saved, "feed_forward_proj": "gated-mish"}))
    with pytest.raises(ValueError, match="mish"):
        T5Backbone.from_huggingface(tmp_path)
    config_file.write_text(json.dumps({**saved, "d_ff": saved["d_ff"] * 2}))
    with pytest.raises(ValueError, match="DenseReluDense"):
        T5Backbone.from_huggingface(tmp_path)


# T5Seq2SeqLM ----------------------------------------------------------------------------
def hf_generate(reference, rows, max_new_tokens, num_beams=1, eos=True):
    """transformers' generate on right-padded rows; the generated ids after the start id."""
    import torch

    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), "int64")
    mask = np.zeros((len(rows), length), "int64")
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    kwargs = {} if eos else {"eos_token_id": None}
    with torch.no_grad():
        out = reference.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=max_new_tokens, num_beams=num_beams,
                                 do_sample=False, length_penalty=1.0, early_stopping=False,
                                 min_length=0, **kwargs).numpy()
    results = []
    for row in out[:, 1:].tolist():
        if eos and 1 in row:
            row = row[:row.index(1)]
        results.append(row)
    return results


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """(transformers reference, our T5Seq2SeqLM) of one v1.1 checkpoint."""
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    path = tmp_path_factory.mktemp("t5_v1_1")
    # Equal encoder and decoder depths: transformers 5's generate sizes the decoder's
    # cache by the encoder's `num_layers` (IndexError otherwise).
    reference = save_hf_t5(path, dict(V1_1, num_decoder_layers=None), seed=3)
    return reference, T5Seq2SeqLM.from_huggingface(path)


RAGGED = [[5, 9, 13, 22, 7, 1], [40, 3, 1], [8, 8, 30, 61, 2, 17, 90, 33, 1]]


def test_seq2seq_logits_equal_transformers(hf_pair):
    reference, lm = hf_pair
    inputs = backbone_inputs(source=12, target=10)
    real = inputs["decoder_padding_mask"].astype(bool)
    assert_close(to_numpy(lm(inputs))[real], hf_logits(reference, inputs)[real], atol=1e-4)


def test_greedy_equals_transformers(hf_pair):
    reference, lm = hf_pair
    ours = lm.generate(RAGGED, max_new_tokens=12, stop_token_ids=None)
    assert ours == hf_generate(reference, RAGGED, 12, eos=False)
    # With T5's end id 1 (which a random model emits rarely) rows stop as in transformers.
    assert lm.generate(RAGGED, max_new_tokens=12) == hf_generate(reference, RAGGED, 12)


def test_beam_equals_transformers(hf_pair):
    reference, lm = hf_pair
    ours = lm.generate(RAGGED, max_new_tokens=10, sampler="beam", num_beams=3,
                       stop_token_ids=None)
    assert ours == hf_generate(reference, RAGGED, 10, num_beams=3, eos=False)
    # With the end id, finished beams wait in a pool as in transformers.
    assert (lm.generate(RAGGED, max_new_tokens=10, sampler="beam", num_beams=3)
            == hf_generate(reference, RAGGED, 10, num_beams=3))


def test_greedy_equals_uncached_argmax_loop():
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    lm = T5Seq2SeqLM(T5Backbone(**V1_0))
    source = np.array([[5, 9, 13, 22, 7, 1]], "int32")
    decoded = [lm.decoder_start_token_id]
    for _ in range(6):
        logits = to_numpy(lm({"encoder_token_ids": source,
                              "encoder_padding_mask": np.ones_like(source),
                              "decoder_token_ids": np.array([decoded], "int32"),
                              "decoder_padding_mask": np.ones((1, len(decoded)), "int32")}))
        decoded.append(int(np.argmax(logits[0, -1])))
    assert lm.generate(source, max_new_tokens=6, stop_token_ids=None).tolist() == [decoded[1:]]


def copy_task(num_rows, length=6, seed=0):
    from keras_bigmodels.objectives.text_to_text import teacher_forcing_batch

    rng = np.random.default_rng(seed)
    rows = [list(rng.integers(2, 12, length)) + [1] for _ in range(num_rows)]
    return teacher_forcing_batch(rows, rows, decoder_start_token_id=0)


def test_fit_learns_to_copy_and_save_load(tmp_path):
    from keras_bigmodels.models.t5 import T5Seq2SeqLM
    from tests.testing import assert_saved_model_matches

    lm = T5Seq2SeqLM(T5Backbone(**dict(V1_1, vocabulary_size=16, num_decoder_layers=2)))
    lm.compile(optimizer=keras.optimizers.AdamW(1e-2))
    x, y, weights = copy_task(64)
    history = lm.fit(x, y, sample_weight=weights, batch_size=32, epochs=12, verbose=0)
    losses = history.history["loss"]
    # From ~3 (random init) to well below ln(10) ~ 2.3, the loss of guessing among the
    # ten content ids: the model reads its input through cross-attention.
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 1.8, losses
    clone = T5Seq2SeqLM.from_config(lm.get_config())
    assert clone.get_config() == lm.get_config()
    assert clone.backbone.count_params() == lm.backbone.count_params()
    restored = assert_saved_model_matches(lm, {k: v[:2] for k, v in x.items()}, tmp_path)
    assert restored.generate(x["encoder_token_ids"][:2], max_new_tokens=7).tolist() == \
        lm.generate(x["encoder_token_ids"][:2], max_new_tokens=7).tolist()


def test_bad_inputs():
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    backbone = T5Backbone(**V1_0)
    lm = T5Seq2SeqLM(backbone)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.generate([[3, VOCAB]], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.generate([[-1, 4]], max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        lm.generate([], max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        lm.generate([[4, 5], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        T5Seq2SeqLM(backbone, decoder_start_token_id=VOCAB)
    with pytest.raises(ValueError, match="eos_token_id"):
        T5Seq2SeqLM(backbone, eos_token_id=-1)
    with pytest.raises(ValueError, match="encoder_only"):
        T5Seq2SeqLM(T5Backbone(**dict(V1_0, encoder_only=True)))
    bad = backbone_inputs()
    bad["decoder_token_ids"][0, 0] = VOCAB + 3
    with pytest.raises(ValueError, match="decoder_token_ids"):
        lm.predict(bad, verbose=0)


@pytest.mark.parametrize("config", [V1_0, V1_1], ids=["v1_0", "v1_1"])
def test_fused_output_loss_equals_the_logits_loss(config):
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    x, y, weights = copy_task(8)
    losses = []
    for fused in (True, False):
        keras.utils.set_random_seed(0)
        lm = T5Seq2SeqLM(T5Backbone(**config))
        # A zero learning rate: the reported loss is the initial weights' loss.
        lm.compile(optimizer=keras.optimizers.SGD(0.0), fused_loss=fused)
        history = lm.fit(x, y, sample_weight=weights, batch_size=8, epochs=1, verbose=0)
        losses.append(history.history["loss"][0])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "bfloat16"])
def test_half_precision_forward_and_generation(dtype):
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    reference = T5Seq2SeqLM(T5Backbone(**V1_1))
    lm = T5Seq2SeqLM(T5Backbone(**V1_1, dtype=dtype))
    lm.set_weights(reference.get_weights())
    inputs = backbone_inputs(padded=False)
    expected = to_numpy(reference(inputs))
    actual = to_numpy(lm(inputs))
    assert actual.dtype == np.float32  # float32 logits whatever the compute dtype
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()
    # The decode loop's caches take the layers' compute dtype (a float32 cache would
    # change type inside the compiled loop).
    output = lm.generate([[5, 6, 7, 1], [8, 1]], max_new_tokens=4, stop_token_ids=None)
    assert [len(row) for row in output] == [4, 4]


def test_cross_attention_keys_values_computed_once_and_not_reordered_by_beams(monkeypatch):
    """The decoder's cross-attention keys/values are computed once per generate() (per
    trace on jax/tensorflow), and beam search carries (and reorders at every step) only
    the self-attention caches: the cross-attention ones are the same for every beam."""
    from keras_bigmodels.layers.transformer import TransformerDecoderBlock
    from keras_bigmodels.models import seq2seq_lm
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    lm = T5Seq2SeqLM(T5Backbone(**V1_0))
    cross_calls, beam_states = [], []
    original_cache = TransformerDecoderBlock.cross_attention_cache
    original_beam = seq2seq_lm.beam_search

    def counting_cache(block, encoder_outputs):
        cross_calls.append(block.name)
        return original_cache(block, encoder_outputs)

    def spying_beam(next_logits, cache, *args, **kwargs):
        beam_states.append([tuple(x.shape) for x in keras.tree.flatten(cache)])
        return original_beam(next_logits, cache, *args, **kwargs)

    monkeypatch.setattr(TransformerDecoderBlock, "cross_attention_cache", counting_cache)
    monkeypatch.setattr(seq2seq_lm, "beam_search", spying_beam)
    new_tokens = 5
    ours = lm.generate(RAGGED, max_new_tokens=new_tokens, sampler="beam", num_beams=3,
                       stop_token_ids=None)
    layers = V1_0["num_decoder_layers"]
    assert len(cross_calls) == layers * lm.generate_traces
    # One state per trace: the self-attention caches of the decoder layers, sized by the
    # decoder buffer (1 + new tokens), none by the 16-token encoder bucket.
    assert beam_states and all(
        shapes == [(len(RAGGED), 2, V1_0["num_heads"], 1 + new_tokens, V1_0["key_dim"])]
        * layers for shapes in beam_states)
    monkeypatch.undo()
    # The beams still equal an independent run (each row alone).
    for row, expected in zip(RAGGED, ours):
        assert lm.generate([row], max_new_tokens=new_tokens, sampler="beam", num_beams=3,
                           stop_token_ids=None) == [expected]


def test_generate_compiles_once_for_inputs_of_one_bucket():
    """Calls whose encoder inputs fall in one length bucket reuse one compiled function
    (no retrace on jax/tensorflow; torch runs eagerly and counts calls)."""
    from keras_bigmodels.models.t5 import T5Seq2SeqLM

    lm = T5Seq2SeqLM(T5Backbone(**V1_0))
    for rows in ([[5, 9, 1]], [[7, 8, 30, 61, 2, 17, 1]], [[40, 3, 12, 1]]):
        lm.generate(rows, max_new_tokens=4)
        lm.generate(rows, max_new_tokens=4, sampler="beam", num_beams=2)
    assert len(lm._generate_functions) == 2
    if keras.backend.backend() != "torch":
        assert lm.generate_traces == 2
