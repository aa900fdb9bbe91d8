import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


def test_quickstart_gpt_tiny(tmp_path):
    import quickstart_gpt

    history = quickstart_gpt.main(["--tiny", "--output", str(tmp_path)])
    assert os.path.isfile(tmp_path / "gpt_loss.png")
    assert len(history["loss"]) >= 1
