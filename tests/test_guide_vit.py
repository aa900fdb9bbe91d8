import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


def test_vit_digits_guide_tiny(tmp_path):
    import vit_digits

    results = vit_digits.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "vit_digits.png")
    assert set(results) == {"vit", "swin"}
    for result in results.values():
        assert 0.0 <= result["test_accuracy"] <= 1.0
        assert len(result["train_loss"]) == 1
