import os
import subprocess
import sys

import keras
import pytest

GUIDES = os.path.join(os.path.dirname(__file__), "..", "guides")

RUN_GUIDES = """
import sys
sys.path.insert(0, {guides!r})
import bert_pretrain_finetune, quickstart_gpt, vit_digits
out = {out!r}
quickstart_gpt.main(["--tiny", "--steps", "2", "--log-every", "1", "--output", out])
vit_digits.main(["--tiny", "--epochs", "1", "--train-images", "64", "--output", out])
bert_pretrain_finetune.main(["--tiny", "--epochs", "1", "--documents", "8",
                             "--finetune-epochs", "1", "--output", out])
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.one_backend("jax", "torch")  # see tests/conftest.py; skips itself on TF
@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="TensorFlow is the backend itself")
def test_guides_do_not_import_tensorflow(tmp_path):
    # A fresh process: the test session itself has TensorFlow loaded (conftest seeds it).
    script = RUN_GUIDES.format(guides=os.path.abspath(GUIDES), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env={**os.environ,
                                              "KERAS_BACKEND": keras.backend.backend()})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout


# The later guides are run by their own tiny tests; here each is only imported, in a fresh
# process, to show that importing a guide does not pull TensorFlow into a JAX/torch run.
IMPORT_GUIDES = """
import sys
sys.path.insert(0, {guides!r})
import importlib
for name in {names!r}:
    importlib.import_module(name)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""
LATER_GUIDES = ["distributed_training", "t5_span_corruption", "bart_denoising", "clip_digits",
                "video_text", "ddpm_digits"]


@pytest.mark.one_backend("jax", "torch")
@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="TensorFlow is the backend itself")
def test_later_guides_import_without_tensorflow():
    script = IMPORT_GUIDES.format(guides=os.path.abspath(GUIDES), names=LATER_GUIDES)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env={**os.environ,
                                              "KERAS_BACKEND": keras.backend.backend()})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout
