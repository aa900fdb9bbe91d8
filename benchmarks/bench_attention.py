"""Attention layer speed: ours (fused and explicit paths) vs `keras.layers.MultiHeadAttention`.

keras-hub builds its models on `keras.layers.MultiHeadAttention`, so this is the block-level
comparison behind every family's numbers. Forward + backward of causal self-attention as a
compiled training step (`train_on_batch`, Adam, MSE to the input), each variant in its own
process through `harness.py`:

    python benchmarks/bench_attention.py --backend jax --tuning ours   # [--batch 16 --length 256]

MFU = tokens/s x (6 (4d^2 + 4d) + 12 d T) / the matmul peak measured at the start of the run
(the causal mask's skipped half is counted, as in the model FLOPs of the other benchmarks).
Writes benchmarks/results/attention_<backend>_<tuning>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

VARIANTS = {"ours_fused": ("ours", "ours, fused (ops.dot_product_attention)"),
            "ours_explicit": ("ours", "ours, explicit einsums"),
            "keras_mha": ("keras", "keras.layers.MultiHeadAttention (keras-hub's block)")}


def setup(variant, batch, length, hidden, heads):
    import keras
    import numpy as np

    inputs = keras.Input((length, hidden))
    if variant == "keras_mha":
        layer = keras.layers.MultiHeadAttention(heads, hidden // heads)
        outputs = layer(inputs, inputs, use_causal_mask=True)
    else:
        from keras_bigmodels.layers import MultiHeadAttention

        layer = MultiHeadAttention(heads, use_fused=(variant == "ours_fused"))
        outputs = layer(inputs, use_causal_mask=True)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.RandomState(0).normal(size=(batch, length, hidden)).astype("float32")
    return ({"train": harness.Measure(harness.keras_train_step(model, x, x), batch * length)},
            {"parameters": model.count_params()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser, steps=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--contenders", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    kwargs = dict(batch=args.batch, length=args.length, hidden=args.hidden, heads=args.heads)
    contenders = [harness.Contender(name, "bench_attention", "setup", library=VARIANTS[name][0],
                                    framework=args.backend, kwargs={"variant": name, **kwargs},
                                    label=VARIANTS[name][1])
                  for name in args.contenders]
    d = args.hidden
    flops = 6 * (4 * d * d + 4 * d) + 12 * d * args.length
    return harness.run("attention", contenders, args, config=kwargs,
                       flops_per_unit={"train": flops})


if __name__ == "__main__":
    main()
