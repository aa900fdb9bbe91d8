import keras
import numpy as np
import pytest

from keras_bigmodels import flops, presets
from keras_bigmodels.layers.windows import (
    PatchMerging,
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from keras_bigmodels.models import SwinBackbone, ImageClassifier
from keras_bigmodels.models.swin.config import swin_params
from tests.testing import (assert_layer_roundtrip, assert_saved_model_matches,
                           perturb_norms_and_biases, to_numpy)

# Stage resolutions 16 -> 8 -> 4: the last stage equals the window, so its second block
# runs unshifted (the reference's clamp), the other stages exercise the shift mask.
TINY = dict(image_size=32, patch_size=2, hidden_dim=16, depths=[2, 2, 2],
            num_heads=[2, 2, 4], window_size=4)


def images(n=2, size=32, channels=3, seed=0):
    return np.random.RandomState(seed).rand(n, size, size, channels).astype("float32")


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(1)
    return SwinBackbone(**TINY)


def test_window_partition_roundtrip_and_order():
    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    windows = to_numpy(window_partition(x, 2))
    assert windows.shape == (12, 4, 3)
    # Second window of the first image: rows 0-1, columns 2-3, row-major inside.
    np.testing.assert_array_equal(windows[1], x[0, 0:2, 2:4].reshape(4, 3))
    np.testing.assert_array_equal(to_numpy(window_reverse(windows, 2, 4, 6)), x)


def test_relative_index_and_shift_mask():
    index = relative_position_index(2)
    # Query (0,0) vs key (1,1): offset (-1,-1) -> (0,0) in the 3x3 table; itself -> center 4.
    assert index[0, 3] == 0 and index[0, 0] == 4 and index.max() == 8
    mask = shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    np.testing.assert_array_equal(mask[0], 0.0)  # first window is one region
    assert (mask[3] == -100.0).sum() == 12  # last window mixes four regions
    np.testing.assert_array_equal(mask, mask.transpose(0, 2, 1))


def test_patch_merging_matches_reference_order(tmp_path):
    x = np.random.RandomState(0).rand(1, 4, 4, 2).astype("float32")
    layer = PatchMerging()
    out = to_numpy(layer(x))
    assert out.shape == (1, 2, 2, 4)
    merged = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                             x[:, 1::2, 1::2]], axis=-1)
    mean, var = merged.mean(-1, keepdims=True), merged.var(-1, keepdims=True)
    normed = (merged - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(out, normed @ to_numpy(layer.reduction.kernel), atol=1e-5)
    assert_layer_roundtrip(layer, x, tmp_path)
    with pytest.raises(ValueError, match="even"):
        PatchMerging()(np.zeros((1, 3, 4, 2), "float32"))


def test_block_errors_and_roundtrip(tmp_path):
    block = SwinTransformerBlock(num_heads=2, intermediate_dim=32, window_size=4, shift_size=2)
    x = np.random.RandomState(0).rand(2, 8, 8, 16).astype("float32")
    assert tuple(block(x).shape) == (2, 8, 8, 16)
    assert block.relative_position_bias_table.shape == (49, 2)
    assert_layer_roundtrip(block, x, tmp_path)
    with pytest.raises(ValueError, match="window_size"):
        SwinTransformerBlock(num_heads=2, intermediate_dim=32, window_size=4)(
            np.zeros((1, 6, 6, 16), "float32"))
    with pytest.raises(ValueError, match="shift_size"):
        SwinTransformerBlock(num_heads=2, intermediate_dim=32, window_size=4, shift_size=4)


def test_outputs_are_hierarchical(backbone):
    out = backbone(images())
    assert tuple(out["stage_0"].shape) == (2, 16, 16, 16)
    assert tuple(out["stage_1"].shape) == (2, 8, 8, 32)
    assert tuple(out["stage_2"].shape) == (2, 4, 4, 64)
    assert tuple(out["sequence_output"].shape) == (2, 16, 64)
    np.testing.assert_allclose(to_numpy(out["pooled_output"]),
                               to_numpy(out["sequence_output"]).mean(1), atol=1e-5)


def test_param_counts_are_analytic(backbone):
    assert backbone.count_params() == swin_params(TINY)
    model = ImageClassifier(backbone, num_classes=7)
    assert model.count_params() == swin_params({**TINY, "num_classes": 7})
    assert flops.count_params("swin-tiny-patch4-window7-224") == 27_519_354
    tiny = presets.get_preset("swin-tiny-patch4-window7-224")
    assert swin_params({**tiny, "num_classes": 1000}) == 28_288_354
    assert set(presets.list_presets("swin")) == {
        "swin-tiny-patch4-window7-224", "swin-small-patch4-window7-224",
        "swin-base-patch4-window7-224"}
    small = SwinBackbone.from_preset("swin-tiny-patch4-window7-224", depths=[1, 1, 1, 1],
                                     hidden_dim=8, num_heads=[1, 1, 2, 2])
    assert small.count_params() == swin_params(
        {**tiny, "depths": [1, 1, 1, 1], "hidden_dim": 8, "num_heads": [1, 1, 2, 2]})


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="same length"):
        SwinBackbone(**{**TINY, "num_heads": [2, 2]})
    with pytest.raises(ValueError, match="divisible by `patch_size`"):
        SwinBackbone(**{**TINY, "image_size": 33})
    with pytest.raises(ValueError, match="window_size"):
        SwinBackbone(**{**TINY, "image_size": 24})
    with pytest.raises(ValueError, match="Known presets"):
        SwinBackbone.from_preset("swin-gigantic")


def test_saves_and_loads(backbone, tmp_path):
    assert_saved_model_matches(backbone, images(), tmp_path)
    model = ImageClassifier(backbone, num_classes=3)
    restored = assert_saved_model_matches(model, images(), tmp_path)
    assert restored.num_classes == 3


def texture_task(n=192, size=16, seed=0):
    """Horizontal stripes, vertical stripes or a checkerboard, random phase, noisy:
    learnable without absolute positions (Swin has none, and mean-pools)."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, size=n).astype("int32")
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x = rng.rand(n, size, size, 1).astype("float32") * 0.5
    for i, label in enumerate(labels):
        phase = rng.randint(0, 4)
        coordinate = [rows, cols, rows + cols][label] + phase
        x[i, ..., 0] += ((coordinate // 2) % 2) * 0.5
    return x, labels


def test_classifier_learns_a_visual_task():
    x, labels = texture_task()
    backbone = SwinBackbone(image_size=16, patch_size=2, hidden_dim=16, depths=[2, 2],
                            num_heads=[2, 4], window_size=4, num_channels=1)
    model = ImageClassifier(backbone, num_classes=3)
    history = model.fit(x, labels, batch_size=32, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert history.history["accuracy"][-1] > 0.7


# --- Hugging Face parity --------------------------------------------------------------

def _hf_config(depths=(2, 2, 2), heads=(2, 2, 4)):
    transformers = pytest.importorskip("transformers")
    return transformers.SwinConfig(image_size=32, patch_size=2, embed_dim=16,
                                   depths=list(depths), num_heads=list(heads), window_size=4,
                                   num_labels=3)


def _randomize_bias_tables(model):
    import torch

    # HF initializes the tables to zeros, which would hide a wrong bias gather; its norms
    # are (1, 0) and its biases 0, which would hide a swapped or skipped one.
    perturb_norms_and_biases(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


def _run(model, x):
    import torch

    with torch.no_grad():
        return model(torch.tensor(x.transpose(0, 3, 1, 2)))


def test_huggingface_swin_model_parity(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    reference = transformers.SwinModel(_hf_config()).eval()
    _randomize_bias_tables(reference)
    reference.save_pretrained(tmp_path)
    x = images()
    expected = _run(reference, x)
    backbone = SwinBackbone.from_huggingface(tmp_path)
    out = to_numpy(backbone(x))
    np.testing.assert_allclose(out["sequence_output"], expected.last_hidden_state.numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(out["pooled_output"], expected.pooler_output.numpy(), atol=1e-4)
    assert backbone.count_params() == sum(p.numel() for p in reference.parameters())


def test_huggingface_swin_classifier_parity(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    reference = transformers.SwinForImageClassification(_hf_config((2, 2), (2, 4))).eval()
    _randomize_bias_tables(reference)
    reference.save_pretrained(tmp_path)
    x = images(seed=1)
    model = ImageClassifier.from_huggingface(tmp_path)
    assert model.num_classes == 3
    np.testing.assert_allclose(to_numpy(model(x)), _run(reference, x).logits.numpy(), atol=1e-4)


def test_huggingface_other_model_types_raise_clear_errors(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.SwinModel(_hf_config((2, 2), (2, 4))).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = config_file.read_text()
    config_file.write_text(config.replace('"model_type": "swin"', '"model_type": "vit"'))
    with pytest.raises(ValueError, match="model_type 'vit'.*SwinBackbone.from_huggingface "
                                         "reads 'swin'"):
        SwinBackbone.from_huggingface(tmp_path)
    # A ViT checkpoint's config (no embed_dim) used to fail with KeyError: 'embed_dim'.
    config_file.write_text('{"model_type": "vit", "hidden_size": 32}')
    with pytest.raises(ValueError, match="model_type 'vit'"):
        SwinBackbone.from_huggingface(tmp_path)
