import keras
import numpy as np
import pytest

from keras_bigmodels import flops, presets
from keras_bigmodels.preprocessing import image_preprocessor
from keras_bigmodels.models import ViTBackbone, ImageClassifier
from keras_bigmodels.models.vit.backbone import interpolate_position_embeddings
from keras_bigmodels.models.vit.config import vit_params
from tests.testing import assert_saved_model_matches, perturb_norms_and_biases, to_numpy

TINY = dict(image_size=16, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32,
            intermediate_dim=64)


def images(n=2, size=16, channels=3, seed=0):
    return np.random.RandomState(seed).rand(n, size, size, channels).astype("float32")


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(1)
    return ViTBackbone(**TINY)


def test_outputs_shapes_and_pooling(backbone):
    out = backbone(images())
    assert tuple(out["sequence_output"].shape) == (2, 17, 32)
    assert tuple(out["pooled_output"].shape) == (2, 32)
    np.testing.assert_allclose(to_numpy(out["pooled_output"]),
                               to_numpy(out["sequence_output"])[:, 0], atol=1e-6)
    mean = ViTBackbone(**TINY, pooling="mean")
    out = to_numpy(mean(images()))
    np.testing.assert_allclose(out["pooled_output"], out["sequence_output"][:, 1:].mean(1),
                               atol=1e-5)


def test_param_counts_are_analytic(backbone):
    assert backbone.count_params() == vit_params(TINY)
    config = {**TINY, "image_size": (16, 8), "num_channels": 1, "use_pooler": True}
    assert ViTBackbone(**config).count_params() == vit_params(config)
    model = ImageClassifier(backbone, num_classes=7)
    assert model.count_params() == vit_params({**TINY, "num_classes": 7})


def test_preset_param_counts():
    assert flops.count_params("vit-base-patch16-224") == 85_798_656
    base = presets.get_preset("vit-base-patch16-224")
    assert vit_params({**base, "num_classes": 1000}) == 86_567_656
    assert flops.count_params("vit-large-patch16-224") == 303_301_632
    assert set(presets.list_presets("vit")) == {
        "vit-tiny-patch16-224", "vit-small-patch16-224", "vit-base-patch16-224",
        "vit-large-patch16-224", "vit-huge-patch14-224"}
    small = ViTBackbone.from_preset("vit-tiny-patch16-224", num_layers=1, image_size=32)
    expected = {**presets.get_preset("vit-tiny-patch16-224"), "num_layers": 1, "image_size": 32}
    assert small.count_params() == vit_params(expected)


def test_bad_arguments_raise_clear_errors(backbone):
    with pytest.raises(ValueError, match="divisible by `patch_size`"):
        ViTBackbone(**{**TINY, "image_size": 18})
    with pytest.raises(ValueError, match="pooling"):
        ViTBackbone(**TINY, pooling="max")
    with pytest.raises(ValueError, match="Known presets"):
        ViTBackbone.from_preset("vit-gigantic")
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassifier(backbone, num_classes=0)
    with pytest.raises(ValueError):
        backbone(images(size=12))


def test_saves_and_loads(backbone, tmp_path):
    assert_saved_model_matches(backbone, images(), tmp_path)
    model = ImageClassifier(backbone, num_classes=3)
    restored = assert_saved_model_matches(model, images(), tmp_path)
    assert restored.num_classes == 3


def test_attention_scores_and_resolution_change(backbone):
    scores = backbone.attention_scores(images())
    assert len(scores) == 2 and tuple(scores[0].shape) == (2, 4, 17, 17)
    np.testing.assert_allclose(to_numpy(scores[-1]).sum(-1), 1.0, atol=1e-5)
    bigger = backbone.with_image_size(24)
    assert tuple(bigger(images(size=24))["sequence_output"].shape) == (2, 37, 32)
    # Same size: interpolation is the identity, so the copy computes the same function.
    same = backbone.with_image_size(16)
    np.testing.assert_allclose(to_numpy(same(images())["pooled_output"]),
                               to_numpy(backbone(images())["pooled_output"]), atol=1e-5)


def test_interpolation_keeps_constants_and_identity():
    # Cubic weights sum to one (constants survive) and a same-size resize is the identity;
    # the match with HF's bicubic is checked in the Hugging Face parity test.
    table = np.concatenate([[[-1.0, 2.0]], np.full((16, 2), 3.0)]).astype("float32")
    out = to_numpy(interpolate_position_embeddings(table, (4, 4), (6, 10)))
    assert out.shape == (61, 2)
    np.testing.assert_allclose(out[0], [-1.0, 2.0])
    np.testing.assert_allclose(out[1:], 3.0, atol=1e-5)
    table = np.random.RandomState(0).rand(17, 3).astype("float32")
    np.testing.assert_allclose(
        to_numpy(interpolate_position_embeddings(table, (4, 4), (4, 4))), table, atol=1e-6)


def test_classifier_learns_a_visual_task():
    # Class = which quadrant holds a bright square; learnable only from the image.
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 4, size=256).astype("int32")
    x = rng.rand(256, 16, 16, 1).astype("float32") * 0.3
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        x[i, r * 8 + 2:r * 8 + 6, c * 8 + 2:c * 8 + 6] += 0.7
    backbone = ViTBackbone(**{**TINY, "num_channels": 1})
    model = ImageClassifier(backbone, num_classes=4)
    history = model.fit(x, labels, batch_size=32, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert history.history["accuracy"][-1] > 0.6


def test_image_preprocessor():
    prep = image_preprocessor(image_size=16, scale=1 / 255.0, mean=0.5, std=0.5, augment=True,
                              seed=0)
    x = np.full((2, 8, 8, 1), 255.0, "float32")
    out = to_numpy(prep(x, training=False))
    assert out.shape == (2, 16, 16, 1)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    assert to_numpy(prep(x, training=True)).shape == (2, 16, 16, 1)


# --- Hugging Face parity --------------------------------------------------------------

def _hf_config():
    transformers = pytest.importorskip("transformers")
    return transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=5,
    )


def _run(model, x, **kwargs):
    import torch

    with torch.no_grad():
        return model(torch.tensor(x.transpose(0, 3, 1, 2)), **kwargs)


def test_huggingface_vit_model_parity(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    reference = transformers.ViTModel(_hf_config()).eval()
    perturb_norms_and_biases(reference)
    reference.save_pretrained(tmp_path)
    x = images()
    expected = _run(reference, x)
    backbone = ViTBackbone.from_huggingface(tmp_path)
    assert backbone.use_pooler and backbone.layer_norm_epsilon == 1e-12
    out = to_numpy(backbone(x))
    np.testing.assert_allclose(out["sequence_output"], expected.last_hidden_state.numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(out["pooled_output"], expected.pooler_output.numpy(), atol=1e-4)
    # Fine-tuning at a new resolution matches HF's interpolate_pos_encoding.
    x24 = images(size=24, seed=1)
    expected = _run(reference, x24, interpolate_pos_encoding=True)
    resized = ViTBackbone.from_huggingface(tmp_path, image_size=24)
    np.testing.assert_allclose(to_numpy(resized(x24)["sequence_output"]),
                               expected.last_hidden_state.numpy(), atol=1e-4)


def test_huggingface_vit_classifier_parity(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    reference = transformers.ViTForImageClassification(_hf_config()).eval()
    perturb_norms_and_biases(reference)
    reference.save_pretrained(tmp_path)
    x = images()
    model = ImageClassifier.from_huggingface(tmp_path)
    assert model.num_classes == 5 and isinstance(model.backbone, ViTBackbone)
    np.testing.assert_allclose(to_numpy(model(x)), _run(reference, x).logits.numpy(), atol=1e-4)
    # One signature: backbone overrides (a new resolution), task kwargs (a new head).
    x24 = images(size=24, seed=1)
    resized = ImageClassifier.from_huggingface(tmp_path, backbone_overrides={"image_size": 24})
    np.testing.assert_allclose(to_numpy(resized(x24)),
                               _run(reference, x24, interpolate_pos_encoding=True).logits.numpy(),
                               atol=1e-4)
    new_head = ImageClassifier.from_huggingface(tmp_path, num_classes=2, dropout=0.1)
    assert new_head.num_classes == 2 and new_head.dropout == 0.1
    (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text().replace(
        '"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    with pytest.raises(ValueError, match="Missing weights"):
        ViTBackbone.from_huggingface(tmp_path)


def test_huggingface_other_model_types_raise_clear_errors(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.ViTModel(_hf_config()).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = config_file.read_text()
    config_file.write_text(config.replace('"model_type": "vit"', '"model_type": "swin"'))
    with pytest.raises(ValueError, match="model_type 'swin'.*ViTBackbone.from_huggingface "
                                         "reads 'vit'"):
        ViTBackbone.from_huggingface(tmp_path)
    config_file.write_text(config.replace('"model_type": "vit"', '"model_type": "bert"'))
    with pytest.raises(ValueError, match="image families 'vit', 'swin'; received 'bert'"):
        ImageClassifier.from_huggingface(tmp_path)
    config_file.write_text(config)
    with pytest.raises(ValueError, match="no `classifier` head; pass `num_classes`"):
        ImageClassifier.from_huggingface(tmp_path)


def test_image_classifier_from_preset_and_bad_backbones():
    model = ImageClassifier.from_preset(
        "vit-tiny-patch16-224", num_classes=3,
        backbone_overrides=dict(num_layers=1, image_size=32, hidden_dim=24, num_heads=2,
                                intermediate_dim=32))
    assert isinstance(model.backbone, ViTBackbone) and model.backbone.num_layers == 1
    assert tuple(model(images(size=32)).shape) == (2, 3)
    with pytest.raises(ValueError, match="image families 'vit', 'swin'; received 'gpt'"):
        ImageClassifier.from_preset("gpt2-small", num_classes=3)
    inputs = keras.Input((4, 4, 3))
    sequence_only = keras.Model(inputs, {"sequence_output": keras.layers.Dense(2)(inputs)})
    with pytest.raises(ValueError, match="`backbone` must be an image backbone"):
        ImageClassifier(sequence_only, num_classes=3)
