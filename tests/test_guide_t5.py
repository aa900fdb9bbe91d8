import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_t5_guide_tiny_run_pretrains_and_fine_tunes(tmp_path):
    import t5_span_corruption

    results = t5_span_corruption.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "t5_span_corruption.png")
    with open(tmp_path / "t5_span_corruption.json") as f:
        assert json.load(f)["exact_match"] == results["exact_match"]
    history = results["pretraining"]
    assert len(history["loss"]) == t5_span_corruption.TINY["epochs"]
    # Span corruption learns context: the held-out targets are predicted better than by
    # the training targets' token frequencies.
    assert results["heldout_pretraining_loss"] < results["unigram_heldout_loss"] - 0.3
    # Fine-tuning learns the task from both starting points (test loss falls).
    for name, curve in results["finetuning"].items():
        assert curve["val_loss"][-1] < curve["val_loss"][0] - 0.3, name
    assert len(results["exact_match"]["pretrained"]) == t5_span_corruption.TINY["finetune_draws"]
    # The pretrained model fine-tunes to a lower test cross-entropy than the same model
    # from its initial weights after the same short fine-tuning (jax 0.24 against 0.55).
    loss = results["mean_test_loss"]
    assert loss["pretrained"] < loss["random init"] - 0.1
    # The linear probe of the frozen encoder ran on every draw for both starts. Its
    # direction is a finding of the default run, not of the tiny one (the docstring).
    assert {name: len(v) for name, v in results["encoder_probe"].items()} == {
        "pretrained": 2, "random init": 2}


def test_section_title_task_holds_out_sentences():
    import t5_span_corruption

    documents = [["Small.", "a.", "b.", "c."], ["String Methods.", *[f"s{i}." for i in range(6)]],
                 [".", *[f"x{i}." for i in range(9)]],  # no worded heading: not a section
                 ["Calls.", *[f"c{i}." for i in range(5)]]]
    task, remaining = t5_span_corruption.section_title_task(documents, num_sections=2)
    assert task["titles"] == ["String Methods", "Calls"]
    inputs, answers = task["test"]
    assert inputs == ["topic: s2.", "topic: s5.", "topic: c2."]
    assert answers == ["String Methods", "String Methods", "Calls"]
    assert len(task["train"][0]) == 4 + 4
    # Test sentences are left out of the pretraining text; other documents are kept.
    assert remaining[1] == ["String Methods.", "s0.", "s1.", "s3.", "s4."]
    assert remaining[0] == documents[0] and remaining[2] == documents[2]
    index = t5_span_corruption.few_labels(task["train"][1], 2, np.random.default_rng(0))
    assert sorted(np.asarray(task["train"][1])[index].tolist()) == [
        "Calls", "Calls", "String Methods", "String Methods"]
    with pytest.raises(ValueError, match="at least 2"):
        t5_span_corruption.section_title_task(documents[:1], num_sections=3)


def test_t5_guide_arguments():
    import t5_span_corruption

    tiny = t5_span_corruption.parse_args(["--tiny"])
    assert (tiny.epochs, tiny.num_layers) == (t5_span_corruption.TINY["epochs"], 2)
    # A flag given with --tiny wins over the tiny default.
    assert t5_span_corruption.parse_args(["--tiny", "--epochs", "5"]).epochs == 5
    assert t5_span_corruption.parse_args(["--epochs", "5", "--tiny"]).epochs == 5
    assert t5_span_corruption.parse_args([]).num_sections == 6


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--learning-rate", "-1"],
                                  ["--warmup", "1.5"], ["--labels-per-section", "x"]])
def test_t5_guide_rejects_bad_values(flag, capsys):
    import t5_span_corruption

    with pytest.raises(SystemExit) as error:
        t5_span_corruption.parse_args(flag)
    assert error.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_t5_guide_help_shows_defaults(capsys):
    import t5_span_corruption

    with pytest.raises(SystemExit):
        t5_span_corruption.parse_args(["--help"])
    assert "(default: 2000)" in " ".join(capsys.readouterr().out.split())


def test_cloze_task_blanks_the_heading_and_the_answer_fills_it():
    import t5_span_corruption as guide
    from keras_bigmodels.tokenizers import Tokenizer

    documents = [["String Methods.", *[f"Strings have method {i}." for i in range(6)]],
                 ["Debugger Commands.", *[f"The debugger runs command {i}." for i in range(6)]]]
    task, _ = guide.section_title_task(documents, num_sections=2, prefix=guide.CLOZE_PREFIX)
    assert task["test"][0][0] == ". Strings have method 2."
    tokenizer = Tokenizer.train_bpe([" ".join(d) for d in documents], vocabulary_size=120,
                                    special_tokens=guide.T5_SPECIALS)
    sentinel, eos = tokenizer.vocabulary_size + 3, tokenizer.token_to_id("</s>")
    data = guide.task_data(task, tokenizer, 48, opening=(sentinel,), closing=(eos,),
                           decoder_start_token_id=0, pad_token_id=0,
                           answer_opening=(sentinel,))
    first = data["test_ids"][0]
    assert first[0] == sentinel and first[-1] == eos
    assert tokenizer.decode(first[1:-1]) == task["test"][0][0]
    target = data["train_targets"][0]
    assert target[0] == sentinel and target[-1] == eos
    assert tokenizer.decode(target[1:-1]).strip() == data["train_answers"][0]

    class Written:  # what a model that fills the blank right would generate
        def generate(self, inputs, max_new_tokens):
            return [data["train_targets"][0]] * len(inputs)

    accuracy, predictions = guide.exact_match(Written(), tokenizer, data["test_ids"][:1],
                                              [data["train_answers"][0]], 8)
    assert predictions == [data["train_answers"][0]] and accuracy == 1.0
