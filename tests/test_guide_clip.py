import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_clip_digits_guide_tiny_beats_chance_zero_shot(tmp_path):
    import clip_digits

    results = clip_digits.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "clip_digits.png")
    with open(tmp_path / "clip_digits.json") as f:
        assert json.load(f)["zero_shot_accuracy"] == results["zero_shot_accuracy"]
    assert len(results["train_loss"]) == clip_digits.TINY["epochs"]
    assert results["train_loss"][-1] < results["train_loss"][0] - 0.5
    # Zero-shot from text prompts alone, well above chance (10%) on held-out digits.
    assert results["zero_shot_accuracy"] > results["chance_accuracy"] + 0.2
    assert results["image_to_text_recall_at_1"] > results["retrieval_chance"] + 0.2
    assert results["linear_probe_accuracy"] > results["majority_class_accuracy"] + 0.2


def test_clip_guide_arguments(capsys):
    import clip_digits

    assert clip_digits.parse_args(["--tiny", "--epochs", "3"]).epochs == 3
    for flag in (["--epochs", "0"], ["--width", "30"], ["--learning-rate", "-1"]):
        with pytest.raises(SystemExit):
            clip_digits.parse_args(flag)
        assert flag[0] in capsys.readouterr().err


def test_captions_use_every_template_and_name_the_digit():
    import numpy as np

    import clip_digits

    names = [str(k) for k in range(10)]
    captions = clip_digits.captions_for(np.array([7] * 40), np.random.RandomState(0), names)
    assert all("7" in c or "seven" in c for c in captions)
    assert len(set(captions)) == len(clip_digits.CAPTION_TEMPLATES)
