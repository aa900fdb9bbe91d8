"""keras_bigmodels.distribution: rule table, planner, and multi-device runs in subprocesses.

Multi-device work runs in child processes (see scenarios.py): JAX must see
XLA_FLAGS=--xla_force_host_platform_device_count=8 before it starts, and this process
has already imported its backend. Under KERAS_BACKEND=jax the JAX scenarios run (all
launched at once, collected by the tests); under tensorflow MirroredStrategy; under torch
DDP over gloo.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_bigmodels import distribution as kd
from keras_bigmodels import flops
from keras_bigmodels.memory import GIB, plan_memory
from tests.distribution.families import TINY_BACKBONES, all_backbone_classes

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 420


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_dir, tag, scenario, *args, backend="jax", devices=None):
    out = os.path.join(tmp_dir, f"{tag}.json")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    if backend == "jax":
        # Compile time dominates these tiny models; -O0 keeps numerics, halves it.
        flags = ["--xla_backend_optimization_level=0"]
        if devices:
            flags.append(f"--xla_force_host_platform_device_count={devices}")
        env["XLA_FLAGS"] = " ".join(flags)
        env["JAX_PLATFORMS"] = "cpu"
    if backend == "torch":
        # gloo finds its own address from the hostname; on some hosts that resolves to an
        # interface the other rank cannot reach and the rendezvous hangs. Pin loopback.
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    log = open(os.path.join(tmp_dir, f"{tag}.log"), "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.distribution.scenarios", scenario, out, *map(str, args)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, out, log.name


def collect(job):
    process, out, log = job
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if not os.path.exists(out):
        with open(log) as f:
            tail = f.read()[-4000:]
        pytest.fail(f"scenario process exited {process.returncode} without results:\n{tail}")
    with open(out) as f:
        results = json.load(f)
    if "scenario" in results:
        pytest.fail("scenario crashed:\n" + results["scenario"]["detail"])
    return results


def assert_check(results, name):
    assert name in results, f"{name} did not run; ran {sorted(results)}"
    assert results[name]["ok"], results[name]["detail"]


def primary_classes():
    """One class per family gets the full forward/fit runs; subclasses share its code."""
    return [c for c in all_backbone_classes() if c.__bases__[0].__name__ == "Backbone"]


# ------------------------------------------------------------------ any backend, in process
def test_every_backbone_has_a_tiny_config():
    missing = [c.__name__ for c in all_backbone_classes() if c.__name__ not in TINY_BACKBONES]
    assert not missing, (
        f"Backbones without a tiny config in tests/distribution/families.py: {missing}. "
        "Add one line each; the sharding tests then cover them."
    )
    assert {"GPTBackbone", "BertBackbone", "ViTBackbone", "SwinBackbone"} <= set(TINY_BACKBONES)


PATHS = {
    "transformer_layer_0/self_attention/query/kernel": ("embed", "heads", "kv"),
    "transformer_layer_3/cross_attention/value/bias": ("heads", "kv"),
    "stage_0_block_1/encoder_block/self_attention/output/kernel": ("heads", "kv", "embed"),
    "transformer_layer_0/self_attention/output/bias": None,
    "transformer_layer_0/feedforward/intermediate_gate/kernel": ("embed", "mlp"),
    "transformer_layer_0/feedforward/output/kernel": ("mlp", "embed"),
    "transformer_layer_0/feedforward/output/bias": None,
    "embedding/token_embedding/embeddings": ("vocab", "table_embed"),
    "embedding/position_embedding/embeddings": None,
    "embedding/patch_embedding/patch_projection/kernel": ("conv", "conv", "conv", "table_embed"),
    "stage_0_merging/reduction/kernel": ("mlp", "embed"),
    "stage_0_block_0/relative_position_bias_table": ("relative_position", "heads"),
    "final_norm/gamma": None,
}


def test_rule_table_names_each_variable_once():
    for path, axes in PATHS.items():
        assert kd.logical_axes(path) == axes, path
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"),
                                         [f"cpu:{i}" for i in range(8)])
    layouts = kd.layout_map(mesh)
    for path, axes in PATHS.items():  # a LayoutMap raises when two keys match
        layout = layouts[path]
        assert (layout is None) == (axes is None), path
    assert layouts["a/self_attention/query/kernel"].axes == (None, "model", None)
    assert layouts["a/self_attention/output/kernel"].axes == ("model", None, None)
    assert layouts["a/feedforward/intermediate/kernel"].axes == (None, "model")
    assert layouts["a/feedforward/output/kernel"].axes == ("model", None)
    assert layouts["a/token_embedding/embeddings"].axes == (None, "model")
    padded = kd.layout_map(mesh, axis_rules={"vocab": "model", "table_embed": None})
    assert padded["a/token_embedding/embeddings"].axes == ("model", None)
    with pytest.raises(ValueError, match="model"):
        kd.layout_map(keras.distribution.DeviceMesh((8,), ("batch",),
                                                    [f"cpu:{i}" for i in range(8)]))


def test_fit_axes_moves_splits_that_do_not_divide():
    sizes = {"model": 4, "batch": 2}
    assert kd.fit_axes((None, "model", None), (32, 8, 4), sizes) == (None, "model", None)
    # Swin-T's 3 heads on 4 devices: the split moves to the width.
    assert kd.fit_axes((None, "model", None), (96, 3, 32), sizes) == ("model", None, None)
    # GPT-2's vocabulary does not divide; with the vocab rule the width takes the split.
    assert kd.fit_axes(("model", None), (50257, 768), sizes) == (None, "model")
    assert kd.fit_axes(None, (7, 3), sizes) == (None, None)
    assert kd.fit_axes(None, (10, 64), sizes) == (None, "model")
    assert kd.fit_axes(None, (64,), sizes) == (None,)


def test_plan_memory_for_gpt3_175b():
    n = flops.count_params("gpt3-175b")
    plan = plan_memory("gpt3-175b", mesh_shape=(1, 1), batch_size=1, sequence_length=2048)
    assert plan.num_params == n
    assert plan.parameters == 4 * n and plan.optimizer_state == 8 * n  # fp32 + Adam m, v
    big = plan_memory("gpt3-175b", mesh_shape=(8, 64), batch_size=64, sequence_length=2048)
    # Block kernels and the token table split 64 ways; norms, biases, positions stay whole.
    assert n / 64 < big.parameters / 4 < n / 64 * 1.01
    assert big.activations_remat < big.activations
    assert big.fits(96) and not big.fits(80, remat=False) and not plan.fits(80)
    # Activations scale with the per-replica batch, not the global one.
    half = plan_memory("gpt3-175b", mesh_shape=(16, 64), batch_size=64, sequence_length=2048)
    assert half.activations == pytest.approx(big.activations / 2)
    assert "gpt3-175b" in str(big) and "total (remat)" in str(big)
    assert 0 < big.total_remat / GIB < 100


def test_plan_memory_matches_a_config_dict_and_rejects_bad_input():
    config = dict(vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=32,
                  intermediate_dim=64, max_sequence_length=16)
    plan = plan_memory(config, mesh_shape=(2, 4), batch_size=8, sequence_length=16,
                       optimizer="sgd")
    assert plan.num_params == flops.transformer_params(config)
    assert plan.optimizer_state == 0
    # layers * s * b * h * (10 + 24/t + 5 a s / (h t)) * (2 bytes / 2), b = 8 / 2
    expected = 2 * 16 * 4 * 32 * (10 + 24 / 4 + 5 * 4 * 16 / (32 * 4))
    assert plan.activations == pytest.approx(expected)
    with pytest.raises(ValueError, match="batch_size"):
        plan_memory(config, mesh_shape=(3, 1), batch_size=8, sequence_length=16)
    with pytest.raises(ValueError, match="optimizer"):
        plan_memory(config, mesh_shape=(1, 1), batch_size=8, sequence_length=16,
                    optimizer="adagrad")
    with pytest.raises(ValueError, match="num_heads"):
        plan_memory("swin-tiny-patch4-window7-224", (1, 1), 8, 49)


@pytest.mark.skipif(BACKEND == "jax", reason="JAX implements keras.distribution")
def test_model_parallel_on_other_backends_raises_clearly():
    with pytest.raises(ValueError, match="JAX backend only"):
        kd.model_parallel(mesh_shape=(1, 2))
    with pytest.raises(ValueError, match="JAX backend only"):
        kd.data_parallel()


# ------------------------------------------------------------------ JAX, in subprocesses
@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    if BACKEND != "jax":
        pytest.skip("the JAX scenarios run once, under KERAS_BACKEND=jax")
    tmp = str(tmp_path_factory.mktemp("distribution"))
    primary = [c.__name__ for c in primary_classes()]
    shards_only = [c.__name__ for c in all_backbone_classes()
                   if c.__name__ in TINY_BACKBONES and c.__name__ not in primary]
    port = free_port()
    # All at once: each is mostly single-threaded compilation.
    jobs = {
        "mp_a": launch(tmp, "mp_a", "model_parallel", tmp, ",".join(primary[0::2]),
                       ",".join(shards_only), devices=8),
        "mp_b": launch(tmp, "mp_b", "model_parallel", tmp, ",".join(primary[1::2]), "",
                       devices=8),
        "host0": launch(tmp, "host0", "multi_host", 0, 2, port, devices=4),
        "host1": launch(tmp, "host1", "multi_host", 1, 2, port, devices=4),
        "dp": launch(tmp, "dp", "data_parallel", devices=8),
    }
    yield {"jobs": jobs, "results": {}, "primary": primary}
    for process, _, _ in jobs.values():  # tests that were deselected leave none behind
        if process.poll() is None:
            process.kill()
            process.wait()


def result(runs, key):
    if key not in runs["results"]:
        runs["results"][key] = collect(runs["jobs"][key])
    return runs["results"][key]


def model_parallel_results(runs):
    merged = {}
    for key in ("mp_a", "mp_b"):
        merged.update(result(runs, key))
    return merged


def test_data_parallel_step_equals_one_device(jax_runs):
    results = result(jax_runs, "dp")
    for name in ("dp_replicated", "dp_matches_single_device", "dp_rejects_bad_batch",
                 "mp_clear_errors", "mp_mesh_uses_every_device", "mp_warns_replicated",
                 "plain_model_parallel", "fallback_split"):
        assert_check(results, name)


@pytest.mark.parametrize("mesh", ["1x8", "2x4"])
def test_every_backbone_splits_its_large_kernels(jax_runs, mesh):
    results = model_parallel_results(jax_runs)
    for cls in all_backbone_classes():
        assert_check(results, f"shards:{cls.__name__}@{mesh}")
        assert_check(results, f"megatron:{cls.__name__}@{mesh}")


@pytest.mark.parametrize("mesh", ["1x8", "2x4"])
def test_model_parallel_forward_and_fit_equal_unsharded(jax_runs, mesh):
    results = model_parallel_results(jax_runs)
    assert len(jax_runs["primary"]) >= 4
    assert_check(results, f"plan_memory:GPTBackbone@{mesh}")
    for name in jax_runs["primary"]:
        assert_check(results, f"forward:{name}@{mesh}")
        assert_check(results, f"fit:{name}@{mesh}")


@pytest.mark.parametrize("mesh", ["1x8", "2x4"])
def test_sharded_generation_equals_one_device(jax_runs, mesh):
    assert_check(model_parallel_results(jax_runs), f"generate:{mesh}")


@pytest.mark.parametrize("mesh", ["1x8", "2x4"])
def test_sharded_causal_lm_fit_equals_one_device(jax_runs, mesh):
    assert_check(model_parallel_results(jax_runs), f"fit_causal_lm:{mesh}")


def test_sharded_model_saves_and_loads(jax_runs):
    results = model_parallel_results(jax_runs)
    assert_check(results, "save_load:same_mesh")
    assert_check(results, "save_load:single_device")


def test_multi_host_loopback_matches_single_process(jax_runs):
    reference = result(jax_runs, "dp")  # also ran the one-process reference
    for host in ("host0", "host1"):
        results = result(jax_runs, host)
        assert results["devices"] == [8, 4]  # 8 global devices, 4 local
        for mode in ("data_parallel", "model_parallel"):
            np.testing.assert_allclose(results[mode], reference[mode], atol=1e-5, err_msg=mode)
        # The 2x4 mesh holds 4 intermediate-kernel shards of 1/4 on each process.
        *local, total = results["local_shards"]
        assert local == [total // 4] * 4
    # Training moved: the second step's loss differs from the first.
    assert reference["data_parallel"][1] < reference["data_parallel"][0]


# --------------------------------------------------------------- TensorFlow and PyTorch
@pytest.mark.skipif(BACKEND != "tensorflow", reason="the MirroredStrategy recipe")
def test_tensorflow_mirrored_strategy_matches_one_device(tmp_path):
    results = collect(launch(str(tmp_path), "mirrored", "mirrored", backend="tensorflow"))
    assert results["replicas"] == 2
    assert_check(results, "mirrored_matches_single_device")


@pytest.mark.skipif(BACKEND != "torch", reason="the DistributedDataParallel recipe")
def test_torch_ddp_matches_one_process(tmp_path):
    port = free_port()
    tmp = str(tmp_path)
    jobs = [launch(tmp, f"rank{r}", "torch_ddp", r, 2, port, backend="torch") for r in (0, 1)]
    reference = collect(launch(tmp, "single", "torch_ddp", 0, 1, 0, backend="torch"))
    ranks = [collect(job) for job in jobs]
    for results in ranks:
        np.testing.assert_allclose(results["losses"], reference["losses"], atol=1e-5)
        for a, b in zip(results["weights"], reference["weights"]):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert reference["losses"][1] < reference["losses"][0]
