import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.parametrize("model", ["bert", "roberta"])
def test_bert_guide_tiny(model, tmp_path):
    import bert_pretrain_finetune

    results = bert_pretrain_finetune.main(["--tiny", "--model", model,
                                           "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / f"{model}_pretrainer.keras")
    history = results["pretraining"]
    assert len(history["mlm_accuracy"]) == 3
    # Even the seconds-long run must learn: the masked-LM loss falls epoch over epoch.
    assert history["mlm_loss"][-1] < history["mlm_loss"][0] - 0.3
    assert ("nsp_loss" in history) == (model == "bert")
    assert 0.0 <= results["finetune_accuracy"]["pretrained"] <= 1.0
