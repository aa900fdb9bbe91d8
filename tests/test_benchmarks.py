"""The benchmark harness and renderer (no timing is asserted: speed lives in benchmarks/)."""

import importlib.util
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def render():
    return _load("render")


@pytest.fixture(scope="module")
def harness():
    return _load("harness")


def test_readme_tables_are_rendered_from_the_json_files(render):
    # Every number in benchmarks/README.md comes from a JSON file the scripts wrote.
    assert render.main(["--check"]) in (0, None)


def test_ratios_per_round_and_flop_normalized(render):
    entry = {"results": {
        "ours": {"rounds": [{"value": 200.0}, {"value": 300.0}], "flops_per_unit": 1.0},
        "peer": {"rounds": [{"value": 100.0}, {"value": 100.0}], "flops_per_unit": 1.5},
    }}
    assert render.round_ratios(entry, "peer") == [2.0, 3.0]
    # The peer does 1.5x the work per token: its achieved FLOP/s count for more.
    assert render.round_ratios(entry, "peer", flop_normalized=True) == pytest.approx(
        [2.0 / 1.5, 3.0 / 1.5])
    assert render.differs_in_work(entry, "peer")
    assert "FLOP-normalized" in render.ratio_parts(entry, "peer")


def test_every_contender_gets_the_same_settings(harness, monkeypatch):
    from keras_bigmodels import runtime

    monkeypatch.setattr(harness, "cpu_count", lambda: 2)
    monkeypatch.setattr(harness, "BASE_ENVIRONMENT", {"PATH": "/bin"})
    ours = harness.worker_environment("ours", "jax")
    assert ours == harness.worker_environment("ours", "jax")
    # The harness replicates runtime.tune_cpu() without importing the library in peers.
    assert harness.XLA_SCHEDULER_FLAG == runtime.XLA_SCHEDULER_FLAG
    assert f"{runtime.XLA_SCHEDULER_FLAG}=false" in ours["XLA_FLAGS"]
    assert "XLA_FLAGS" not in harness.worker_environment("none", "jax")
    monkeypatch.setattr(harness, "cpu_count", lambda: 16)
    assert "XLA_FLAGS" not in harness.worker_environment("ours", "jax")


FAKE_BENCH = """
import os, time
import harness

def setup(delay):
    def step():
        time.sleep(delay)
        return [os.getpid()]
    return {"train": harness.Measure(step, 10)}, {"pid": os.getpid()}
"""


def test_fresh_processes_alternate_and_record_their_process(harness, render, tmp_path):
    # `--processes 2`: each contender runs in two fresh workers one after another, the
    # rounds keep alternating across them, and every round records its process.
    import argparse

    (tmp_path / "fake_bench.py").write_text(FAKE_BENCH)
    parser = harness.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--processes", "2", "--rounds", "2", "--steps", "1",
                              "--warmup", "0"])
    extra = {"PYTHONPATH": str(tmp_path)}
    contenders = [harness.Contender("ours", "fake_bench", "setup", kwargs={"delay": 0.001},
                                    environment=extra),
                  harness.Contender("peer", "fake_bench", "setup", library="keras",
                                    kwargs={"delay": 0.002}, environment=extra)]
    results = harness.run("fake", contenders, args, {}, write=False,
                          peaks={"jax": {"flops_per_second": None}})
    assert results["processes"] == 2 and results["rounds"] == 2
    train = results["measurements"]["train"]["results"]
    for name in ("ours", "peer"):
        rounds = train[name]["rounds"]
        assert [r["process"] for r in rounds] == [0, 0, 1, 1]
        pids = results["contenders"][name]["worker_pids"]
        assert len(set(pids)) == 2
        assert train[name]["step_returned"] == [pids[-1]]  # the last round's worker
    # Positions alternate over all four rounds, across the change of process.
    assert [r["position"] for r in train["ours"]["rounds"]] == [0, 1, 0, 1]
    assert render.rounds_text(results) == "4 rounds (2 processes x 2)"
    with pytest.raises(ValueError, match="--processes"):
        harness.check_arguments(parser.parse_args(["--processes", "0"]))


def test_summary_is_median_min_max(harness):
    assert harness.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_seq2seq_helpers_give_every_contender_the_same_work(harness, render):
    encoder, decoder, labels = harness.seq2seq_batch(100, 2, 5, 3, start_id=2)
    assert encoder.shape == (2, 5) and decoder.shape == labels.shape == (2, 3)
    # Teacher forcing: the decoder reads the labels shifted right behind the start id.
    assert (decoder[:, 0] == 2).all() and (decoder[:, 1:] == labels[:, :-1]).all()
    # No special id (pad, start, end of any family) inside the data.
    assert min(encoder.min(), labels.min()) >= harness.FIRST_ORDINARY_ID
    again = harness.seq2seq_batch(100, 2, 5, 3, start_id=2)
    assert all((a == b).all() for a, b in zip(again, (encoder, decoder, labels)))
    job = {"batch": 8, "new_tokens": 32, "prompt_length": 16, "beams": 4}
    assert harness.seq2seq_prompts(100, job).shape == (8, 16)
    assert render.measure_title(harness.generation_name(job)) == "beam-4 b=8 32 tok"
    jobs = harness.generation_jobs([1, 8], [1], 4, 32, 16)
    assert [harness.generation_name(j) for j in jobs] == [
        "generate_b1_n32", "generate_b8_n32", "beam4_b1_n32"]


def test_seq2seq_training_flops_count_each_matmul_on_its_tokens(harness):
    # 1 + 1 layers, d 2, d_ff 3, one head of 2, vocabulary 10, 1 source and 1 target token:
    # encoder q/k/v/o 16 + feed-forward 12 + scores 4; decoder self q/k/v/o and cross q/o
    # 24 + feed-forward 12 + cross k/v on the source 8 + scores 4 + 4; output 20; x2 x3.
    assert harness.seq2seq_training_flops(10, 2, 3, 1, 2, 1, 1, 1, 1) == 6 * (32 + 52 + 20)
    # The output layer reads the target only; the encoder's projections the source only.
    base = harness.seq2seq_training_flops(10, 2, 3, 1, 2, 1, 1, 1, 1)
    assert harness.seq2seq_training_flops(20, 2, 3, 1, 2, 1, 1, 1, 1) - base == 6 * 20
    assert harness.seq2seq_training_flops(10, 2, 3, 1, 2, 0, 1, 1, 1) == 6 * (52 + 20)


def test_clip_bench_gives_every_contender_the_same_loss_and_data():
    import keras
    import numpy as np
    import torch
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    from keras_bigmodels.losses import ContrastiveLoss

    bench = _load("bench_clip")
    logits = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    # The loss written for keras-hub is ours and transformers' symmetric InfoNCE.
    keras_hub_loss = float(keras.ops.mean(bench.symmetric_info_nce(None, logits)))
    ours = float(ContrastiveLoss()(np.zeros(4), logits))
    # What CLIPModel(return_loss=True) computes, from its logits_per_text.
    theirs = float(image_text_contrastive_loss(torch.tensor(logits).T))
    assert keras_hub_loss == pytest.approx(ours, rel=1e-5)
    assert keras_hub_loss == pytest.approx(theirs, rel=1e-5)
    # The loss must see the pairing: swapping two texts changes it.
    swapped = logits[:, [1, 0, 2, 3]]
    assert float(keras.ops.mean(bench.symmetric_info_nce(None, swapped))) != pytest.approx(
        keras_hub_loss)
    # Every side pools the text at its largest id: the last token, in every row.
    images, tokens = bench.make_batch(bench.CONFIG, 3)
    assert images.shape == (3, 64, 64, 3) and tokens.shape == (3, 32)
    assert (tokens.argmax(axis=1) == 31).all() and tokens.max() < bench.CONFIG["vocabulary_size"]


def test_clip_flops_count_both_towers():
    bench = _load("bench_clip")
    config = dict(bench.CONFIG)
    base = bench.flops_per_pair(config, 32)
    # One more layer adds one layer of each tower: 65 patch tokens and 32 text tokens.
    d, f = config["hidden_dim"], config["intermediate_dim"]
    layer = sum(t * (2 * (4 * d * d + 2 * d * f) + 4 * t * d) for t in (65, 32))
    assert bench.flops_per_pair(dict(config, num_layers=5), 32) - base == 3 * layer


def test_diffusion_bench_noises_the_same_way_on_both_sides(render):
    import diffusers
    import numpy as np
    import torch
    from keras import ops

    from keras_bigmodels.objectives.diffusion import NoiseSchedule

    bench = _load("bench_diffusion")
    images = bench.make_images(bench.CONFIG, 2)
    assert images.shape == (2, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    assert (images == bench.make_images(bench.CONFIG, 2)).all()
    noise = np.random.default_rng(1).normal(size=images.shape).astype("float32")
    timesteps = np.array([3, 977])
    ours = ops.convert_to_numpy(NoiseSchedule(1000, "linear").add_noise(
        images * 2 - 1, noise, timesteps))
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").add_noise(
        torch.tensor(images * 2 - 1), torch.tensor(noise), torch.tensor(timesteps)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert render.measure_title(bench.sample_name(8, 50)) == "DDIM-50 b=8"


def test_diffusion_bench_counts_the_unet_it_builds():
    from keras_bigmodels.models.diffusion import UNet2D
    from keras_bigmodels.models.diffusion.config import count_unet2d_params, unet2d_flops

    bench = _load("bench_diffusion")
    unet = bench.unet_config(bench.CONFIG)
    assert count_unet2d_params(unet) == UNet2D(**unet).count_params()
    flops = bench.flops_per_image(bench.CONFIG, 50)
    assert flops["train"] == unet2d_flops(unet, 32)
    # A DDIM call runs the UNet forward once per step on every image.
    assert flops["sample"] == 50 * unet2d_flops(unet, 32, training=False)


def test_profile_jax_reads_dot_flops_from_hlo():
    profile = _load("profile_jax")
    hlo = """HloModule jit_step

%fused_computation.3 (param_0.1: f32[512,8192], param_1.2: f32[8192,256]) -> f32[512,256] {
  %param_0.1 = f32[512,8192]{1,0} parameter(0)
  %param_1.2 = f32[8192,256]{1,0} parameter(1)
  ROOT %dot.7 = f32[512,256]{1,0} dot(%param_0.1, %param_1.2), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.9 (a.1: f32[512,8192], b.2: f32[8192,256], c.3: f32[4,8,16]) -> f32[512,256] {
  %a.1 = f32[512,8192]{1,0} parameter(0)
  %b.2 = f32[8192,256]{1,0} parameter(1)
  %c.3 = f32[4,8,16]{2,1,0} parameter(2)
  %dot.4 = f32[4,8,8]{2,1,0} dot(%c.3, %c.3), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={2}, metadata={op_name="jit(step)/scores"}
  ROOT %ynn_fusion.3 = f32[512,256]{1,0} fusion(%a.1, %b.2), kind=kCustom, calls=%fused_computation.3, metadata={op_name="jit(step)/logits"}
}
"""
    ops = profile.parse_hlo(hlo)
    assert ops["ynn_fusion.3"] == ("f32[512,256]", "fusion", "jit(step)/logits",
                                   2 * 512 * 256 * 8192)
    assert ops["dot.4"][3] == 2 * 4 * 8 * 8 * 16
    assert ops["a.1"][3] == 0


def test_profile_torch_checks_its_run_and_contenders(tmp_path):
    profile = _load("profile_torch")
    run = tmp_path / "run.json"
    run.write_text('{"backend": "jax", "contenders": {"ours": {}}}')
    with pytest.raises(SystemExit, match="needs a torch run"):
        profile.main([str(run), "train"])
    run.write_text('{"backend": "torch", "contenders": {"ours": {}, "transformers": {}}}')
    with pytest.raises(SystemExit, match="keras_hub"):
        profile.main([str(run), "train", "--contenders", "ours", "keras_hub"])
    with pytest.raises(SystemExit, match="--steps"):
        profile.main([str(run), "train", "--steps", "0"])
