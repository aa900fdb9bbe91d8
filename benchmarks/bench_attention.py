"""Attention layer speed: ours (fused and explicit paths) vs `keras.layers.MultiHeadAttention`.

keras-hub builds its models on `keras.layers.MultiHeadAttention`, so this is the block-level
comparison behind every family's numbers. Forward + backward of causal self-attention, timed
as a compiled training step (`model.fit`-style `train_on_batch`).

Usage: KERAS_BACKEND=jax python benchmarks/bench_attention.py [--batch 16 --length 256 ...]
Writes benchmarks/results/attention_<backend>.json.
"""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_bigmodels.layers import MultiHeadAttention  # noqa: E402


def build(kind, args):
    inputs = keras.Input((args.length, args.hidden))
    if kind == "keras.layers.MultiHeadAttention":
        layer = keras.layers.MultiHeadAttention(args.heads, args.hidden // args.heads)
        outputs = layer(inputs, inputs, use_causal_mask=True)
    else:
        layer = MultiHeadAttention(args.heads, use_fused=(kind == "ours (fused)"))
        outputs = layer(inputs, use_causal_mask=True)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    return model


def time_steps(model, x, steps):
    model.train_on_batch(x, x)  # compile
    model.train_on_batch(x, x)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, x)
    float(loss)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    x = np.random.RandomState(0).normal(size=(args.batch, args.length, args.hidden))
    x = x.astype("float32")
    results = {"backend": keras.backend.backend(), "config": vars(args), "runs": {}}
    for kind in ("ours (fused)", "ours (explicit)", "keras.layers.MultiHeadAttention"):
        seconds = time_steps(build(kind, args), x, args.steps)
        tokens = args.batch * args.length / seconds
        results["runs"][kind] = {"step_seconds": seconds, "tokens_per_second": tokens}
        print(f"{results['backend']:>10}  {kind:<34} {tokens:12,.0f} tokens/s")
    base = results["runs"]["keras.layers.MultiHeadAttention"]["tokens_per_second"]
    for kind, run in results["runs"].items():
        run["speedup_vs_keras"] = run["tokens_per_second"] / base
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"attention_{results['backend']}.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
