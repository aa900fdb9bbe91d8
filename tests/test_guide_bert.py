import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


def test_bert_guide_tiny(tmp_path):
    import bert_pretrain_finetune

    results = bert_pretrain_finetune.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "bert_pretrainer.keras")
    assert len(results["pretraining"]["mlm_accuracy"]) == 1
    assert 0.0 <= results["finetune_accuracy"]["pretrained"] <= 1.0
