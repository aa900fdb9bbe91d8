import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_ddpm_digits_guide_tiny_beats_the_noise_baseline(tmp_path):
    import ddpm_digits

    # The pixel-space runs; the latent run has its own test below.
    results = ddpm_digits.main(["--tiny", "--runs", "unconditional,class",
                                "--output", str(tmp_path)])
    assert len(results["figures"]) == 1 + len(results["models"]["class"]["guidance"])
    for path in results["figures"]:
        assert os.path.isfile(path)
    with open(tmp_path / "ddpm_digits.json") as f:
        assert json.load(f)["models"].keys() == {"unconditional", "class"}
    assert results["classifier_test_accuracy"] > 0.5
    noise = results["frechet_baselines"]["blurred_noise_vs_held_out"]
    assert results["frechet_baselines"]["real_train_vs_held_out"] < noise
    models = results["models"]
    for kind in ("unconditional", "class"):
        losses = models[kind]["train_loss"]
        assert len(losses) == ddpm_digits.TINY["epochs"]
        assert losses[-1] < 0.7 * losses[0]
    # The direction the guide reports: samples are closer to real digits than blurred
    # noise with the digits' statistics is (an untrained denoiser's samples are not).
    assert models["unconditional"]["frechet_distance"] < 0.85 * noise
    plain = models["class"]["guidance"][0]
    assert plain["guidance_scale"] == 1.0
    assert plain["frechet_distance"] < 0.85 * noise or plain["class_accuracy"] > 0.2


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_ddpm_digits_guide_latent_run_at_minimal_size(tmp_path):
    import ddpm_digits

    # Minimal: a few epochs say that the autoencoder and the latent model train and that
    # caption prompts sample through the whole path, not how good the samples are.
    results = ddpm_digits.main(["--tiny", "--runs", "latent", "--samples-per-class", "3",
                                "--classifier-epochs", "4", "--num-steps", "4",
                                "--latent-epochs", "5", "--output", str(tmp_path)])
    with open(tmp_path / "ddpm_digits.json") as f:
        assert json.load(f)["models"].keys() == {"latent"}
    latent = results["models"]["latent"]
    autoencoder = latent["autoencoder"]
    losses = autoencoder["train_loss"]
    assert len(losses) == ddpm_digits.TINY["autoencoder_epochs"]
    assert losses[-1] < 0.5 * losses[0]
    # The decoder reproduces digits: its reconstructions of held-out digits are far closer
    # to them than the noise baseline (an untrained autoencoder's are not).
    noise = results["frechet_baselines"]["blurred_noise_vs_held_out"]
    assert autoencoder["held_out_reconstructions"]["frechet_distance"] < 0.5 * noise
    assert 0 < autoencoder["scaling_factor"] < np.inf
    losses = latent["train_loss"]
    assert len(losses) == 5 and losses[-1] < 0.9 * losses[0]
    assert [entry["guidance_scale"] for entry in latent["guidance"]] == [1.0, 2.0]
    assert len(results["figures"]) == 2
    for path in results["figures"]:
        assert os.path.isfile(path)


def test_captions_cover_every_digit_and_template():
    import ddpm_digits

    tokenizer = ddpm_digits.caption_tokenizer()
    templates = len(ddpm_digits.CAPTION_TEMPLATES)
    captions = ddpm_digits.captions_for([7] * templates, range(templates))
    assert captions[0] == "a handwritten digit seven" and len(set(captions)) == templates
    assert all("seven" in text for text in captions)
    from keras_bigmodels.models.clip import pack_texts

    ids = pack_texts(captions, tokenizer, ddpm_digits.SEQUENCE_LENGTH)
    end = tokenizer.token_to_id(ddpm_digits.SPECIAL_TOKENS[1])
    # No caption is cut: each row keeps its end token after the whole text.
    for row, text in zip(ids, captions):
        assert len(tokenizer.encode(text)) + 2 <= ddpm_digits.SEQUENCE_LENGTH
        assert end in row.tolist()


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
    assert ddpm_digits.parse_args([]).runs == ["unconditional", "class", "latent"]
    assert ddpm_digits.parse_args(["--runs", "dit, latent"]).runs == ["dit", "latent"]
    for flag in (["--epochs", "0"], ["--runs", "resnet"], ["--runs", "class,class"],
                 ["--runs", ","], ["--image-size", "12"], ["--latent-epochs", "0"],
                 ["--kl-weight", "0"], ["--guidance-scales", "1,-1"],
                 ["--guidance-scales", "a"], ["--num-steps", "2000"]):
        with pytest.raises(SystemExit):
            ddpm_digits.parse_args(flag)
        assert flag[0] in capsys.readouterr().err
