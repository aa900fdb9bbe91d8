"""Multi-device scenarios, each run in its own process (the test sets the environment).

    python -m tests.distribution.scenarios NAME OUT.json [ARGS...]

JAX scenarios need XLA_FLAGS=--xla_force_host_platform_device_count=N and
KERAS_BACKEND=jax before JAX starts; the parent test sets both. Each scenario writes a
JSON of named checks {name: {"ok": bool, "detail": str}} (plus numbers) to OUT.json, so
one process serves many pytest assertions.
"""

import json
import os
import sys
import time
import traceback

import numpy as np

RESULTS = {}


def check(name, fn):
    """Run fn() -> detail string; record failures instead of stopping the scenario."""
    try:
        detail = fn()
        RESULTS[name] = {"ok": True, "detail": str(detail or "")}
    except Exception:  # noqa: BLE001  (the report carries the traceback to pytest)
        RESULTS[name] = {"ok": False, "detail": traceback.format_exc()[-3000:]}


def max_diff(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def assert_all_close(actual, expected, atol, what):
    if isinstance(expected, dict):
        for key in expected:
            assert_all_close(actual[key], expected[key], atol, f"{what}[{key}]")
        return
    diff = max_diff(actual, expected)
    if not diff <= atol:
        raise AssertionError(f"{what}: max |diff| {diff:.3g} > {atol}")


# ----------------------------------------------------------------------------- models
def foundation_model(vocabulary_size=64, hidden_dim=32, num_heads=8, seed=1):
    """TransformerEmbedding + 2 encoder blocks + tied TokenEmbedding(reverse=True) head."""
    import keras

    from keras_bigmodels.layers.embeddings import TransformerEmbedding
    from keras_bigmodels.layers.transformer import TransformerEncoderBlock

    keras.utils.set_random_seed(seed)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    embedding = TransformerEmbedding(vocabulary_size, hidden_dim, max_sequence_length=16,
                                     name="embedding")
    x = embedding(token_ids)
    for i in range(2):
        x = TransformerEncoderBlock(num_heads=num_heads, intermediate_dim=2 * hidden_dim,
                                    name=f"transformer_layer_{i}")(x, use_causal_mask=True)
    logits = embedding.token_embedding(x, reverse=True)
    return keras.Model(token_ids, logits, name="foundation_lm")


def lm_data(vocabulary_size=64, batch=8, length=8, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randint(0, vocabulary_size, (batch, length)).astype("int32")
    y = np.roll(x, -1, axis=1)
    return x, y


def first_output(outputs):
    if isinstance(outputs, dict):
        return outputs.get("sequence_output", next(iter(outputs.values())))
    return outputs


def trainable_wrapper(backbone):
    """A model that maps the backbone's inputs to one tensor, so `fit` takes MSE on it."""
    import keras

    return keras.Model(backbone.input, first_output(backbone(backbone.input)))


def compile_sgd(model, loss):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=True)


def fit_one_step(model, x, y, batch_size):
    history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return float(history.history["loss"][-1])


def local_sizes(variable):
    """Element counts of the shards this process holds (one per local device)."""
    return [int(np.prod(shard.data.shape)) for shard in variable.value.addressable_shards]


# -------------------------------------------------------------------------- scenarios
def scenario_data_parallel(out):
    import keras

    from keras_bigmodels import distribution as kd

    x, y = lm_data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.distribution.set_distribution(None)
    reference = foundation_model()
    weights = reference.get_weights()
    compile_sgd(reference, loss)
    ref_loss = fit_one_step(reference, x, y, 8)

    dist = kd.data_parallel()
    model = foundation_model(seed=2)
    model.set_weights(weights)
    compile_sgd(model, loss)

    def replicated():
        kernel = model.weights[5]
        sizes = local_sizes(kernel)
        assert len(sizes) == 8 and set(sizes) == {int(np.prod(kernel.shape))}, sizes
        return f"mesh {dist.device_mesh.shape}, {kernel.path} on {len(sizes)} devices"

    check("dp_replicated", replicated)
    dp_loss = fit_one_step(model, x, y, 8)
    RESULTS["losses"] = {"single": ref_loss, "data_parallel": dp_loss}

    def same_step():
        assert abs(dp_loss - ref_loss) <= 1e-5, (dp_loss, ref_loss)
        for a, b in zip(model.get_weights(), reference.get_weights()):
            assert_all_close(a, b, 1e-5, "weights after one step")
        return f"loss {dp_loss:.6f} vs {ref_loss:.6f}"

    check("dp_matches_single_device", same_step)

    def bad_batch():
        try:
            model.fit(x[:6], y[:6], batch_size=6, epochs=1, verbose=0)
        except ValueError as error:
            assert "divisible by the mesh's 'batch' axis" in str(error), str(error)
            return str(error)
        raise AssertionError("a batch of 6 on 8 replicas did not raise")

    check("dp_rejects_bad_batch", bad_batch)
    def clear_errors():
        messages = []
        for kwargs, match in (
            (dict(mesh_shape=(4, 4)), "needs 16 devices but 8 are visible"),
            (dict(mesh_shape=(2, 4), model="swin-tiny-patch4-window7-224"), "num_heads=3"),
            (dict(mesh_shape=(8,)), "must be (data, model)"),
        ):
            try:
                kd.model_parallel(**kwargs)
            except ValueError as error:
                assert match in str(error), str(error)
                messages.append(str(error))
            else:
                raise AssertionError(f"model_parallel({kwargs}) did not raise")
        distribution = kd.model_parallel(mesh_shape=(None, 4), model="gpt3-175b")
        assert distribution.device_mesh.shape == (2, 4), distribution.device_mesh.shape
        return "\n".join(messages)

    check("mp_clear_errors", clear_errors)

    def mesh_uses_every_device():
        messages = []
        for mesh_shape in ((2, 3), (None, 3), (1, 4)):
            try:
                kd.model_parallel(mesh_shape=mesh_shape)
            except ValueError as error:
                assert "of the 8 visible devices" in str(error), str(error)
                assert "devices=keras.distribution.list_devices()" in str(error), str(error)
                messages.append(str(error))
            else:
                raise AssertionError(f"model_parallel(mesh_shape={mesh_shape}) on 8 devices "
                                     "did not raise")
        try:
            kd.model_parallel(mesh_shape=(2, 2), devices=keras.distribution.list_devices()[:6])
        except ValueError as error:
            assert "uses 4 of the 6 `devices`" in str(error), str(error)
        else:
            raise AssertionError("a 2x2 mesh over 6 explicit devices did not raise")
        return "\n".join(messages)

    check("mp_mesh_uses_every_device", mesh_uses_every_device)

    def warns_about_replicated_variables():
        import warnings

        six = keras.distribution.list_devices()[:6]
        distribution = kd.model_parallel(mesh_shape=(2, 3), devices=six)
        assert distribution.device_mesh.shape == (2, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = foundation_model()  # 8 heads of 4, width 32, feed-forward 64: none / 3
        messages = [str(w.message) for w in caught if "replicated" in str(w.message)]
        query = "transformer_layer_0/self_attention/query/kernel"
        assert any(f"`{query}` (32, 8, 4) is replicated" in m for m in messages), messages
        assert any("intermediate/kernel` (32, 64)" in m for m in messages), messages
        # One warning per kind of variable; the list names every one of them.
        assert not any("transformer_layer_1" in m for m in messages), messages
        paths = [path for path, _ in distribution.replicated_variables]
        assert query in paths and query.replace("_0", "_1") in paths, paths
        query_kernel = next(v for v in model.weights if v.path == query)
        assert len(set(local_sizes(query_kernel))) == 1  # whole on each device
        return "\n".join(messages)

    check("mp_warns_replicated", warns_about_replicated_variables)

    def plain_keras_model_parallel():
        from keras_bigmodels.models import GPTBackbone
        from tests.distribution.families import TINY_BACKBONES

        mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"),
                                             keras.distribution.list_devices())
        keras.distribution.set_distribution(keras.distribution.ModelParallel(
            layout_map=kd.layout_map(mesh), batch_dim_name="batch"))
        backbone = GPTBackbone(**TINY_BACKBONES["GPTBackbone"][0])
        megatron_axes(backbone)
        table = backbone.get_layer("embedding").token_embedding.embeddings
        assert tuple(table.value.sharding.spec) == (None, "model"), table.value.sharding
        return "the static LayoutMap works with keras.distribution.ModelParallel"

    check("plain_model_parallel", plain_keras_model_parallel)

    def heads_that_do_not_divide():
        from keras_bigmodels.models import SwinBackbone
        from tests.distribution.families import TINY_BACKBONES

        kd.model_parallel(mesh_shape=(1, 8))
        kwargs = {**TINY_BACKBONES["SwinBackbone"][0], "num_heads": [2, 4]}
        backbone = SwinBackbone(**kwargs)
        query = next(v for v in backbone.weights if v.path.endswith("query/kernel"))
        assert tuple(query.value.sharding.spec)[:1] == ("model",), query.value.sharding
        return shard_report(backbone, 8, THRESHOLD) + f"; {query.path} moved to its width"

    check("fallback_split", heads_that_do_not_divide)
    keras.distribution.set_distribution(None)
    scenario_multi_host(out, 0, 1, 0)  # the one-process reference of the multi-host run


MESHES = ((1, 8), (2, 4))
THRESHOLD = 512  # elements; every tiny config's block kernels are >= 32 * 32


def large_variables(model, threshold):
    return [v for v in model.weights if len(v.shape) >= 2 and np.prod(v.shape) >= threshold]


def shard_report(model, model_axis, threshold):
    """Assert every large weight holds 1/model_axis of its elements on every device."""
    bad = []
    for variable in large_variables(model, threshold):
        total = int(np.prod(variable.shape))
        sizes = local_sizes(variable)
        if set(sizes) != {total // model_axis}:
            bad.append(f"{variable.path} {tuple(variable.shape)}: {sorted(set(sizes))} of {total}")
    if bad:
        raise AssertionError("weights not split 1/%d:\n  " % model_axis + "\n  ".join(bad))
    return f"{len(large_variables(model, threshold))} large weights split 1/{model_axis}"


def megatron_axes(model):
    """The named rules took their Megatron dimension (heads / mlp) for these tiny configs."""
    expected = {
        "attention/query/kernel": 1, "attention/output/kernel": 0,
        "feedforward/intermediate/kernel": 1, "feedforward/output/kernel": 0,
    }
    seen = set()
    for variable in model.weights:
        for suffix, dim in expected.items():
            if variable.path.endswith(suffix):
                spec = tuple(variable.value.sharding.spec) + (None,) * len(variable.shape)
                assert spec[dim] == "model", f"{variable.path}: {spec}"
                seen.add(suffix)
    assert seen == set(expected), f"rules never matched: {set(expected) - seen}"


def mse_target(outputs):
    return np.random.RandomState(7).normal(size=np.shape(outputs)).astype("float32")


def reference_run(build, inputs, loss):
    import keras

    keras.distribution.set_distribution(None)
    model = build()
    weights = model.get_weights()
    if loss == "mse":
        out = model.predict_on_batch(inputs)
        x, y = inputs, mse_target(out)
    else:
        x, y = inputs
        out = model.predict_on_batch(x)
    compile_sgd(model, loss)
    step_loss = fit_one_step(model, x, y, 8)
    return weights, out, step_loss, model.get_weights()


def scenario_model_parallel(out, tmp_dir, full, shards_only=""):
    """Forward + fit equality on both meshes for `full` classes, shard checks for all."""
    import keras

    from keras_bigmodels import distribution as kd
    from keras_bigmodels import models
    from tests.distribution.families import TINY_BACKBONES

    for name in filter(None, shards_only.split(",")):
        kwargs, _ = TINY_BACKBONES[name]
        for mesh in MESHES:
            kd.model_parallel(mesh_shape=mesh)
            keras.utils.set_random_seed(1)
            backbone = getattr(models, name)(**kwargs)
            tag = f"{name}@{mesh[0]}x{mesh[1]}"
            check(f"shards:{tag}", lambda: shard_report(backbone, mesh[1], THRESHOLD))
            check(f"megatron:{tag}", lambda: megatron_axes(backbone))
    for name in filter(None, full.split(",")):
        start = time.time()
        kwargs, make_inputs = TINY_BACKBONES[name]

        def build(cls=getattr(models, name), kwargs=kwargs):
            keras.utils.set_random_seed(1)
            return trainable_wrapper(cls(**kwargs))

        inputs = make_inputs(8, 0)
        reference = reference_run(build, inputs, "mse")
        for mesh in MESHES:
            model = _sharded(name, build, inputs, inputs, "mse", mesh, reference)
        if name == "GPTBackbone":
            save_and_load(model, inputs, tmp_dir)
            sharded_generation()
        RESULTS.setdefault("seconds", {})[name] = round(time.time() - start, 1)


def planned_bytes_match(model, mesh_shape):
    """plan_memory's weight bytes per device equal what device 0 really holds."""
    from keras_bigmodels.memory import plan_memory
    from tests.distribution.families import TINY_BACKBONES

    config = {**TINY_BACKBONES["GPTBackbone"][0], "family": "gpt"}
    planned = plan_memory(config, mesh_shape, batch_size=8, sequence_length=8).parameters
    held = sum(shard.data.nbytes for v in model.weights
               for shard in v.value.addressable_shards if shard.device.id == 0)
    assert planned == held, (planned, held)
    return f"{held} bytes on device 0, as planned"


def _sharded(name, build, inputs, forward_inputs, loss, mesh_shape, reference):
    from keras_bigmodels import distribution as kd

    weights, ref_out, ref_loss, ref_weights = reference
    kd.model_parallel(mesh_shape=mesh_shape)
    model = build()
    model.set_weights(weights)
    tag = f"{name}@{mesh_shape[0]}x{mesh_shape[1]}"
    check(f"shards:{tag}", lambda: shard_report(model, mesh_shape[1], THRESHOLD))
    check(f"megatron:{tag}", lambda: megatron_axes(model))
    if name == "GPTBackbone":
        check(f"plan_memory:{tag}", lambda: planned_bytes_match(model, mesh_shape))
    out = model.predict_on_batch(forward_inputs)
    check(f"forward:{tag}", lambda: assert_all_close(out, ref_out, 1e-5, "forward"))
    compile_sgd(model, loss)
    if loss == "mse":
        x, y = inputs, mse_target(ref_out)
    else:
        x, y = inputs
    step_loss = fit_one_step(model, x, y, 8)

    def same_step():
        assert abs(step_loss - ref_loss) <= 1e-5, (step_loss, ref_loss)
        for a, b in zip(model.get_weights(), ref_weights):
            assert_all_close(a, b, 1e-5, "weights after one step")
        return f"loss {step_loss:.6f} vs {ref_loss:.6f}"

    check(f"fit:{tag}", same_step)
    return model


def sharded_generation():
    """Greedy decoding with sharded kernels and KV cache gives one device's tokens, and
    a `fit` step of the causal LM (its fused output layer + loss) one device's step."""
    import keras

    from keras_bigmodels import distribution as kd
    from keras_bigmodels import models
    from tests.distribution.families import TINY_BACKBONES

    kwargs = TINY_BACKBONES["GPTBackbone"][0]
    vocabulary = kwargs["vocabulary_size"]
    prompts = np.random.RandomState(3).randint(0, vocabulary, (2, 4))
    tokens = np.random.RandomState(4).randint(0, vocabulary, (8, 9)).astype("int32")
    keras.distribution.set_distribution(None)
    keras.utils.set_random_seed(1)
    single = models.GPTCausalLM(models.GPTBackbone(**kwargs))
    weights = single.get_weights()
    expected = single.generate(prompts.astype("int32"), max_new_tokens=6)
    single.compile(optimizer=keras.optimizers.SGD(0.1), fused_loss=True)
    ref_loss = fit_one_step(single, tokens[:, :-1], tokens[:, 1:], 8)
    ref_weights = single.get_weights()
    for mesh in MESHES:
        kd.model_parallel(mesh_shape=mesh)
        lm = models.GPTCausalLM(models.GPTBackbone(**kwargs))
        lm.set_weights(weights)

        def same_tokens(lm=lm):
            generated = lm.generate(prompts.astype("int32"), max_new_tokens=6)
            np.testing.assert_array_equal(generated, expected)
            return "same greedy tokens"

        def same_step(lm=lm):
            lm.compile(optimizer=keras.optimizers.SGD(0.1), fused_loss=True)
            step_loss = fit_one_step(lm, tokens[:, :-1], tokens[:, 1:], 8)
            assert abs(step_loss - ref_loss) <= 1e-5, (step_loss, ref_loss)
            for a, b in zip(lm.get_weights(), ref_weights):
                assert_all_close(a, b, 1e-5, "weights after one step")
            return f"loss {step_loss:.6f} vs {ref_loss:.6f}"

        check(f"generate:{mesh[0]}x{mesh[1]}", same_tokens)
        check(f"fit_causal_lm:{mesh[0]}x{mesh[1]}", same_step)


def save_and_load(wrapper, inputs, tmp_dir):
    """The sharded (2x4) backbone saves, loads onto the same mesh and onto one device."""
    import keras

    backbone = wrapper.layers[-1] if not hasattr(wrapper, "family") else wrapper
    expected = first_output(backbone.predict_on_batch(inputs))
    path = os.path.join(tmp_dir, "sharded.keras")
    backbone.save(path)

    def same_mesh():
        restored = keras.saving.load_model(path)
        shard_report(restored, 4, THRESHOLD)
        actual = first_output(restored.predict_on_batch(inputs))
        assert_all_close(actual, expected, 1e-6, "loaded on the 2x4 mesh")
        return "loaded sharded 1/4, outputs equal"

    check("save_load:same_mesh", same_mesh)
    keras.distribution.set_distribution(None)

    def single_device():
        restored = keras.saving.load_model(path)
        sizes = local_sizes(restored.weights[0])
        assert len(sizes) == 1, sizes
        actual = first_output(restored.predict_on_batch(inputs))
        assert_all_close(actual, expected, 1e-5, "loaded on one device")
        return "loaded on one device, outputs equal"

    check("save_load:single_device", single_device)


def fixed_weights(model):
    rng = np.random.RandomState(3)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in model.get_weights()])


def scenario_multi_host(out, process_id, num_processes, port):
    """2 processes x 4 CPU devices over gloo; or the single-process reference (1 process).

    Each process feeds its own half of the global batch (auto_shard_dataset=False) and
    reports the losses of two steps, for data parallel and for a 2x4 model-parallel mesh.
    """
    process_id, num_processes = int(process_id), int(num_processes)
    import keras

    from keras_bigmodels import distribution as kd

    if num_processes > 1:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        kd.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=num_processes,
                      process_id=process_id)
        RESULTS["devices"] = [len(keras.distribution.list_devices()), jax.local_device_count()]
    x, y = lm_data(batch=8)
    rows = slice(process_id * 8 // num_processes, (process_id + 1) * 8 // num_processes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for mode in ("data_parallel", "model_parallel"):
        if num_processes == 1:
            keras.distribution.set_distribution(None)
        elif mode == "data_parallel":
            kd.data_parallel(auto_shard_dataset=False)
        else:
            kd.model_parallel(mesh_shape=(2, 4), auto_shard_dataset=False)
        model = foundation_model()
        fixed_weights(model)
        compile_sgd(model, loss)
        history = model.fit(x[rows], y[rows], batch_size=8 // num_processes, epochs=2,
                            shuffle=False, verbose=0)
        RESULTS[mode] = [float(v) for v in history.history["loss"]]
        if mode == "model_parallel" and num_processes > 1:
            kernel = next(v for v in model.weights if v.path.endswith("intermediate/kernel"))
            RESULTS["local_shards"] = local_sizes(kernel) + [int(np.prod(kernel.shape))]


def dense_model(seed=1):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="tanh", name="intermediate")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="output")(hidden))


def regression_data(batch=8):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(batch, 6)).astype("float32")
    return x, (x @ rng.normal(size=(6, 1))).astype("float32")


def scenario_mirrored(out):
    """tf.distribute.MirroredStrategy on 2 virtual CPUs vs one device: same step."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from keras_bigmodels import distribution as kd

    x, y = regression_data()
    reference = dense_model()
    weights = reference.get_weights()
    compile_sgd(reference, "mse")
    ref_loss = fit_one_step(reference, x, y, 8)
    strategy = kd.mirrored_strategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = dense_model(seed=2)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    loss = fit_one_step(model, x, y, 8)
    RESULTS["replicas"] = strategy.num_replicas_in_sync
    RESULTS["losses"] = [ref_loss, loss]

    def same_step():
        assert strategy.num_replicas_in_sync == 2
        assert abs(loss - ref_loss) <= 1e-5, (loss, ref_loss)
        for a, b in zip(model.get_weights(), reference.get_weights()):
            assert_all_close(a, b, 1e-5, "weights after one step")
        return f"loss {loss:.6f} vs {ref_loss:.6f} on 2 replicas"

    check("mirrored_matches_single_device", same_step)


def scenario_torch_ddp(out, rank, world_size, port):
    """DistributedDataParallel over gloo: rank r trains on its rows; world 1 = reference."""
    rank, world_size = int(rank), int(world_size)
    import keras
    import torch

    from keras_bigmodels import distribution as kd
    from keras_bigmodels.backend import ddp_train_step

    x, y = regression_data()
    model = dense_model(seed=1 + rank)  # DDP broadcasts rank 0's weights
    model(x[:1])
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.MeanSquaredError()
    if world_size > 1:
        import datetime

        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=180))
        ddp = kd.torch_ddp_model(model)
    else:
        ddp = model
    rows = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    if world_size > 1:
        losses = [ddp_train_step(ddp, model, optimizer, loss_fn, x[rows], y[rows])
                  for _ in range(2)]
    else:
        losses = []
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            loss = loss_fn(y, model(x))
            loss.backward()
            optimizer.apply([v.value.grad for v in model.trainable_variables],
                            model.trainable_variables)
            losses.append(float(loss.detach()))
    RESULTS["losses"] = losses
    RESULTS["weights"] = [w.tolist() for w in model.get_weights()]
    if world_size > 1:
        # Tearing DDP down can deadlock: the Reducer's last reference to the gloo group
        # joins gloo's worker thread while this thread holds the GIL, and that worker
        # needs the GIL to release a finished allreduce's tensors (seen both in CI and
        # here, intermittently). Wait for both ranks, write the results, and
        # leave without running destructors.
        torch.distributed.barrier()
        RESULTS["wall_seconds"] = None
        with open(out, "w") as f:
            json.dump(RESULTS, f, indent=1)
        sys.stdout.flush()
        os._exit(0)


SCENARIOS = {"data_parallel": scenario_data_parallel, "model_parallel": scenario_model_parallel,
             "multi_host": scenario_multi_host, "mirrored": scenario_mirrored,
             "torch_ddp": scenario_torch_ddp}


def main():
    name, out_path, *args = sys.argv[1:]
    start = time.time()
    try:
        SCENARIOS[name](out_path, *args)
    except Exception:  # noqa: BLE001
        RESULTS["scenario"] = {"ok": False, "detail": traceback.format_exc()[-3000:]}
    RESULTS["wall_seconds"] = round(time.time() - start, 1)
    with open(out_path, "w") as f:
        json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
