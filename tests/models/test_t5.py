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
def hf_config(config, **overrides):
    transformers = pytest.importorskip("transformers")
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
    return transformers.T5Config(**kwargs)


def save_hf_t5(path, config, seed=0, encoder_only=False):
    """A random transformers T5 with every norm scale perturbed away from 1, saved with
    save_pretrained; an untied config gets its own lm_head.weight as released v1.1
    checkpoints have (transformers 5 would otherwise tie a fresh model's head)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    hf = hf_config(config)
    cls = transformers.T5EncoderModel if encoder_only else transformers.T5ForConditionalGeneration
    model = cls(hf).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.5 * torch.randn_like(parameter))
    model.save_pretrained(path)
    if not encoder_only and not config["tie_embeddings"]:
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


@pytest.mark.parametrize("config", [V1_0, V1_1], ids=["v1_0", "v1_1"])
def test_backbone_huggingface_parity(tmp_path, config):
    reference = save_hf_t5(tmp_path, config)
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
