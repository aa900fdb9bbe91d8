"""A task saved to .keras and loaded again continues training where it stopped: same
optimizer class and hyperparameters, same optimizer state, same loss, and the next steps'
losses equal those of the uninterrupted run (GPT's case is in tests/models/test_gpt.py)."""

import keras
import numpy as np
import pytest

from keras_bigmodels.models import BertBackbone, BertClassifier, ImageClassifier, ViTBackbone


def _bert():
    backbone = BertBackbone(vocabulary_size=60, num_layers=1, num_heads=2, hidden_dim=16,
                            intermediate_dim=32, max_sequence_length=8, dropout=0.0)
    model = BertClassifier(backbone, num_classes=3, dropout=0.0)
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1, 60, (16, 8)).astype("int32"),
         "segment_ids": np.zeros((16, 8), "int32"),
         "padding_mask": np.ones((16, 8), bool)}
    return model, x, rng.integers(0, 3, (16,))


def _vit():
    backbone = ViTBackbone(image_size=8, patch_size=4, num_layers=1, num_heads=2,
                           hidden_dim=16, intermediate_dim=32, num_channels=1, dropout=0.0)
    model = ImageClassifier(backbone, num_classes=3)
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, (16,))


@pytest.mark.parametrize("build", [_bert, _vit], ids=["bert", "vit"])
def test_saved_task_resumes_training(build, tmp_path):
    model, x, y = build()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored.optimizer).__name__ == "SGD"
    assert float(restored.optimizer.momentum) == pytest.approx(0.9)
    assert int(restored.optimizer.iterations) == 2
    expected = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    resumed = restored.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(resumed.history["loss"], expected.history["loss"], rtol=1e-5)
