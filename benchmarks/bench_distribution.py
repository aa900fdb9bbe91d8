"""Data vs model parallelism on 8 simulated CPU devices (JAX), and the planner vs real shards.

For one GPT config: the compiled `train_on_batch` step time with no distribution, data
parallel over 8, and model parallel on 2x4 and 1x8 meshes; and, per mesh, the weight
bytes device 0 really holds (summed over its shards) next to `plan_memory`'s prediction.
Simulated CPU devices share the same cores, so the times show the cost of the collectives
and partitioning on one machine, not a speed-up; the memory columns are exact.

Usage: python benchmarks/bench_distribution.py [--hidden 256 --layers 2 --steps 5]
Writes benchmarks/results/distribution_jax.json.
"""

import argparse
import json
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_bigmodels import distribution as kd  # noqa: E402
from keras_bigmodels.models import GPTBackbone, GPTCausalLM  # noqa: E402


def device0_bytes(model):
    total = 0
    for variable in model.weights:
        for shard in variable.value.addressable_shards:
            if shard.device.id == 0:
                total += shard.data.nbytes
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocabulary", type=int, default=4096)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    config = dict(vocabulary_size=args.vocabulary, num_layers=args.layers,
                  num_heads=args.heads, hidden_dim=args.hidden,
                  intermediate_dim=4 * args.hidden, max_sequence_length=args.length,
                  dropout=0.0)
    rng = np.random.RandomState(0)
    x = rng.randint(0, args.vocabulary, (args.batch, args.length)).astype("int32")
    y = np.roll(x, -1, axis=1)
    rows = []
    for name, mesh in (("single device", None), ("data parallel 8", (8, 1)),
                       ("model parallel 2x4", (2, 4)), ("model parallel 1x8", (1, 8))):
        if mesh is None:
            keras.distribution.set_distribution(None)
        elif mesh[1] == 1:
            kd.data_parallel()
        else:
            kd.model_parallel(mesh_shape=mesh)
        keras.utils.set_random_seed(0)
        lm = GPTCausalLM(GPTBackbone(**config))
        lm.compile(optimizer="adam", jit_compile=True)
        start = time.perf_counter()
        lm.train_on_batch(x, y)
        compile_seconds = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            keras.ops.convert_to_numpy(lm.train_on_batch(x, y, return_dict=True)["loss"])
            times.append(time.perf_counter() - start)
        plan = kd.plan_memory({**config, "family": "gpt"}, mesh_shape=mesh or (1, 1),
                              batch_size=args.batch, sequence_length=args.length)
        rows.append({
            "run": name, "mesh": list(mesh) if mesh else None,
            "step_ms": 1000 * float(np.median(times)), "compile_s": compile_seconds,
            "weight_bytes_device0": device0_bytes(lm), "planned_weight_bytes": plan.parameters,
            "num_params": lm.count_params(),
        })
        print(json.dumps(rows[-1]), flush=True)
    keras.distribution.set_distribution(None)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "distribution_jax.json")
    with open(out, "w") as f:
        json.dump({"config": config, "batch": args.batch, "steps": args.steps,
                   "devices": "8 simulated CPU devices (XLA host platform), 2 cores",
                   "keras": keras.__version__, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
