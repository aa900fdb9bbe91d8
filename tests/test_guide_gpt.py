import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


def test_quickstart_gpt_tiny_learns_and_saves(tmp_path):
    import keras
    import quickstart_gpt

    results = quickstart_gpt.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "gpt_loss.png")
    with open(tmp_path / "quickstart_gpt.json") as f:
        assert json.load(f)["heldout_loss"] == results["heldout_loss"]
    history = results["history"]
    # One point of the curve per logged interval, each with its held-out loss.
    assert len(history["loss"]) == len(history["val_loss"]) == len(results["curve_steps"])
    assert results["curve_steps"][-1] == results["steps"]
    # Held-out loss below what knowing nothing (uniform over the vocabulary) costs, and
    # falling as training goes on.
    assert results["heldout_loss"] < np.log(results["vocabulary_size"]) - 0.5
    assert history["val_loss"][-1] < history["val_loss"][0]
    # The model its help promises, with its tokenizer: it generates the same text.
    lm = keras.saving.load_model(results["model_path"])
    new_tokens = quickstart_gpt.TINY["new_tokens"] // 2
    assert lm.generate(quickstart_gpt.PROMPTS[0], max_new_tokens=new_tokens) == results["greedy"]


def test_quickstart_arguments(capsys):
    import quickstart_gpt

    assert quickstart_gpt.parse_args(["--tiny"]).steps == quickstart_gpt.TINY["steps"]
    assert quickstart_gpt.parse_args(["--tiny", "--steps", "7"]).steps == 7
    with pytest.raises(SystemExit):
        quickstart_gpt.parse_args(["--steps", "0"])
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quickstart_gpt.parse_args(["--help"])
    assert "(default: 300)" in " ".join(capsys.readouterr().out.split())
