"""Data vs model parallelism on 8 simulated CPU devices (JAX), and the planner vs real shards.

For one GPT config: the compiled `train_on_batch` step time with no distribution, data
parallel over 8, and model parallel on 2x4 and 1x8 meshes, each layout in its own process
through `harness.py` (alternating rounds); and, per mesh, the weight bytes device 0 really
holds (summed over its shards) next to `plan_memory`'s prediction. Simulated CPU devices
share the same cores, so the times show the cost of the collectives and partitioning on one
machine, not a speed-up; the memory columns are exact.

    python benchmarks/bench_distribution.py --backend jax --tuning ours [--hidden 256]

Other backends are skipped (Keras 3's `keras.distribution` is JAX-only).

Writes benchmarks/results/distribution_jax_<tuning>.json.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

LAYOUTS = {"single_device": None, "data_parallel_8": (8, 1), "model_parallel_2x4": (2, 4),
           "model_parallel_1x8": (1, 8)}


def setup(layout, config, batch, length):
    import keras
    import numpy as np
    from keras_bigmodels import distribution as kd
    from keras_bigmodels.models import GPTBackbone, GPTCausalLM

    mesh = LAYOUTS[layout]
    if mesh is None:
        keras.distribution.set_distribution(None)
    elif mesh[1] == 1:
        kd.data_parallel()
    else:
        kd.model_parallel(mesh_shape=mesh)
    keras.utils.set_random_seed(0)
    lm = GPTCausalLM(GPTBackbone(**config))
    lm.compile(optimizer="adam", jit_compile=True, metrics=[])
    rng = np.random.RandomState(0)
    x = rng.randint(0, config["vocabulary_size"], (batch, length)).astype("int32")
    y = np.roll(x, -1, axis=1)
    start = time.perf_counter()
    lm.train_on_batch(x, y)
    compile_seconds = time.perf_counter() - start
    device0 = 0
    for variable in lm.weights:
        for shard in variable.value.addressable_shards:
            if shard.device.id == 0:
                device0 += shard.data.nbytes
    plan = kd.plan_memory({**config, "family": "gpt"}, mesh_shape=mesh or (1, 1),
                          batch_size=batch, sequence_length=length)
    info = {"mesh": list(mesh) if mesh else None, "compile_seconds": compile_seconds,
            "weight_bytes_device0": device0, "planned_weight_bytes": plan.parameters,
            "parameters": lm.count_params()}
    return {"train": harness.Measure(harness.keras_train_step(lm, x, y), batch * length)}, info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocabulary", type=int, default=4096)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--contenders", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    args = parser.parse_args(argv)
    if args.backend != "jax":
        # `make bench` runs every script once per backend; this one is JAX's only.
        print(f"bench_distribution: JAX only (keras.distribution); skipped for {args.backend}.")
        return None
    config = dict(vocabulary_size=args.vocabulary, num_layers=args.layers,
                  num_heads=args.heads, hidden_dim=args.hidden,
                  intermediate_dim=4 * args.hidden, max_sequence_length=args.length,
                  dropout=0.0)
    kwargs = dict(config=config, batch=args.batch, length=args.length)
    environment = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    contenders = [harness.Contender(name, "bench_distribution", "setup", library="ours",
                                    framework="jax", kwargs={"layout": name, **kwargs},
                                    label=name.replace("_", " "), environment=environment)
                  for name in args.contenders]
    return harness.run("distribution", contenders, args, config=kwargs,
                       notes=["8 simulated CPU devices (XLA host platform) on the machine's "
                              "cores: times show partitioning and collective costs, not "
                              "speed-ups; byte columns are exact."])


if __name__ == "__main__":
    main()
