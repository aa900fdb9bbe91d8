import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_vit_digits_guide_tiny_beats_majority_class(tmp_path):
    import vit_digits

    results = vit_digits.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "vit_digits.png")
    with open(tmp_path / "vit_digits.json") as f:
        assert json.load(f)["models"].keys() == results["models"].keys() == {"vit", "swin"}
    for result in results["models"].values():
        assert len(result["train_loss"]) == vit_digits.TINY["epochs"]
        assert result["train_loss"][-1] < result["train_loss"][0]
        assert result["test_accuracy"] > results["majority_class_accuracy"] + 0.1


def test_vit_attention_maps_name_their_layer():
    import numpy as np
    import vit_digits

    args = vit_digits.parse_args(["--tiny"])
    images = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    vit = vit_digits.build("vit", args, 10)
    attention, layer = vit_digits.vit_attention(vit, images)
    assert attention.shape == (2, 4, 4) and layer == "transformer_layer_3"
    # [CLS]'s probabilities over the patches: the rest of its 1 goes to itself.
    assert np.all(attention.sum(axis=(1, 2)) < 1.0) and np.all(attention > 0)
    swin = vit_digits.build("swin", args, 10)
    attention, layer = vit_digits.swin_attention(swin, images)
    assert layer == "stage_1_block_0"
    # Each query's probabilities sum to 1 over its window, so the attention received,
    # averaged over the queries, sums to 1 per window (here one 4x4 window).
    assert attention.shape == (2, 4, 4)
    np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, rtol=1e-4)


def test_vit_guide_arguments(capsys):
    import vit_digits

    assert vit_digits.parse_args(["--tiny", "--epochs", "3"]).epochs == 3
    for flag in (["--epochs", "0"], ["--models", "vit,resnet"], ["--image-size", "12"]):
        with pytest.raises(SystemExit):
            vit_digits.parse_args(flag)
        assert flag[0] in capsys.readouterr().err
