import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


def test_ddpm_digits_guide_tiny_beats_the_noise_baseline(tmp_path):
    import ddpm_digits

    results = ddpm_digits.main(["--tiny", "--output", str(tmp_path)])
    assert len(results["figures"]) == 1 + len(results["models"]["conditional"]["guidance"])
    for path in results["figures"]:
        assert os.path.isfile(path)
    with open(tmp_path / "ddpm_digits.json") as f:
        assert json.load(f)["models"].keys() == {"unconditional", "conditional"}
    assert results["classifier_test_accuracy"] > 0.5
    noise = results["frechet_baselines"]["blurred_noise_vs_held_out"]
    assert results["frechet_baselines"]["real_train_vs_held_out"] < noise
    models = results["models"]
    for kind in ("unconditional", "conditional"):
        losses = models[kind]["train_loss"]
        assert len(losses) == ddpm_digits.TINY["epochs"]
        assert losses[-1] < 0.7 * losses[0]
    # The direction the guide reports: samples are closer to real digits than blurred
    # noise with the digits' statistics is (an untrained denoiser's samples are not).
    assert models["unconditional"]["frechet_distance"] < 0.85 * noise
    plain = models["conditional"]["guidance"][0]
    assert plain["guidance_scale"] == 1.0
    assert plain["frechet_distance"] < 0.85 * noise or plain["class_accuracy"] > 0.2


def test_frechet_distance_and_baseline():
    import ddpm_digits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 3))
    assert ddpm_digits.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Two Gaussians: ||mu_a - mu_b||^2 + sum (sigma_a - sigma_b)^2 for diagonal covariances.
    b = 2.0 * rng.standard_normal((20000, 3)) + 1.0
    c = rng.standard_normal((20000, 3))
    assert ddpm_digits.frechet_distance(b, c) == pytest.approx(3 * 1.0 + 3 * 1.0, rel=0.05)
    reference = rng.random((50, 8, 8, 1)).astype("float32")
    noise = ddpm_digits.blurred_noise(30, reference, seed=0)
    assert noise.shape == (30, 8, 8, 1) and noise.min() >= 0 and noise.max() <= 1
    assert abs(noise.mean() - reference.mean()) < 0.05


def test_ddpm_guide_arguments(capsys):
    import ddpm_digits

    assert ddpm_digits.parse_args(["--tiny", "--epochs", "3"]).epochs == 3
    for flag in (["--epochs", "0"], ["--denoiser", "resnet"], ["--image-size", "12"],
                 ["--guidance-scales", "1,-1"], ["--guidance-scales", "a"],
                 ["--num-steps", "2000"]):
        with pytest.raises(SystemExit):
            ddpm_digits.parse_args(flag)
        assert flag[0] in capsys.readouterr().err
