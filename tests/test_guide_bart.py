import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_bart_guide_tiny_pretraining_helps(tmp_path):
    import bart_denoising

    results = bart_denoising.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "bart_denoising.png")
    with open(tmp_path / "bart_denoising.json") as f:
        assert json.load(f)["exact_match"] == results["exact_match"]
    history = results["pretraining"]
    assert len(history["loss"]) == bart_denoising.TINY["epochs"]
    # Denoising learns the text: the held-out originals are predicted better than by the
    # training targets' token frequencies (the trivial baseline of the objective).
    assert results["heldout_pretraining_loss"] < results["unigram_heldout_loss"] - 0.3
    # The pretrained model fine-tunes faster on few labels than the same model from its
    # initial weights: a lower test cross-entropy after the same short fine-tuning. (At
    # this size neither writes the right titles more often than always answering the
    # largest section's: the exact match is reported, not asserted.)
    loss = results["mean_test_loss"]
    assert loss["pretrained"] < loss["random init"] - 0.1
    assert set(results["exact_match"]) == {"pretrained", "random init"}
    assert {name: len(v) for name, v in results["encoder_probe"].items()} == {
        "pretrained": 2, "random init": 2}


def test_bart_guide_arguments():
    import bart_denoising

    tiny = bart_denoising.parse_args(["--tiny"])
    assert (tiny.epochs, tiny.num_layers) == (bart_denoising.TINY["epochs"], 2)
    assert bart_denoising.parse_args(["--tiny", "--epochs", "5"]).epochs == 5
    assert bart_denoising.parse_args(["--epochs", "5", "--tiny"]).epochs == 5
    # The downstream options are those of the T5 guide (one task, one set of flags).
    assert bart_denoising.parse_args([]).num_sections == 6


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--mask-ratio", "1.5"],
                                  ["--finetune-draws", "0"], ["--sequence-length", "x"]])
def test_bart_guide_rejects_bad_values(flag, capsys):
    import bart_denoising

    with pytest.raises(SystemExit) as error:
        bart_denoising.parse_args(flag)
    assert error.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_bart_guide_help_shows_defaults(capsys):
    import bart_denoising

    with pytest.raises(SystemExit):
        bart_denoising.parse_args(["--help"])
    assert "(default: 0.3)" in " ".join(capsys.readouterr().out.split())
