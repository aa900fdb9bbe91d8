"""Distributed training: the same GPT, data parallel and model parallel, with `model.fit`.

Runs on 8 simulated CPU devices (JAX), in a few minutes on 2 CPU cores:

    python guides/distributed_training.py            # GPT on the embedded corpus
    python guides/distributed_training.py --tiny     # a seconds-long smoke run

1. Data parallel over 8 devices: every device holds the whole model, each batch is split.
2. Model parallel on a 2 x 4 (data x model) mesh: the generic rule table splits every
   attention and feed-forward kernel and the token table 4 ways (printed per weight).
3. The memory plan of GPT-3 175B on real meshes, before allocating anything.
4. The launch recipe for multi-host pods.

`keras.distribution` is JAX-only in Keras 3.15: this guide sets KERAS_BACKEND=jax unless
told otherwise; TensorFlow users get `kbm.distribution.mirrored_strategy()`, PyTorch users
`kbm.distribution.torch_ddp_model()` (data parallel only).
"""

import os

# Both must be set before JAX starts: 8 CPU "devices" stand in for 8 accelerators.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402

import keras_bigmodels as kbm  # noqa: E402
from keras_bigmodels import distribution as kd  # noqa: E402
from keras_bigmodels.objectives.causal_lm import pack_documents  # noqa: E402
from keras_bigmodels.tokenizers import Tokenizer  # noqa: E402

import guide_cli  # noqa: E402

MULTI_HOST_RECIPE = """\
Multi-host launch (one process per host; every host runs the same script):

    import keras_bigmodels as kbm
    kbm.distribution.initialize(job_addresses="10.0.0.1:1234",    # coordinator host:port
                                num_processes=NUM_HOSTS, process_id=HOST_INDEX)
    kbm.distribution.model_parallel(mesh_shape=(NUM_HOSTS, 8),  # 8 chips per host
                                    auto_shard_dataset=False)
    lm = kbm.models.GPTCausalLM.from_preset("gpt3-xl")      # created sharded
    lm.fit(my_host_shard_of_the_data, ...)                    # each host feeds its rows

On Cloud TPU call `initialize()` with no arguments (it reads the TPU environment), or set
KERAS_DISTRIBUTION_JOB_ADDRESSES / _NUM_PROCESSES / _PROCESS_ID. Keep the model axis
within a host (fast interconnect) and the data axis across hosts. Checkpoint sharded
models with keras.callbacks.OrbaxCheckpoint (JAX) to avoid gathering weights on one host;
`.keras` files gather every tensor on the host.
"""


# `--tiny`: a smoke run in seconds.
TINY = dict(steps=2, documents=40, vocabulary_size=256, hidden_dim=32, num_layers=1,
            sequence_length=16, batch_size=8)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    positive = guide_cli.positive_int
    parser.add_argument("--steps", type=positive, default=40, help="training steps per run")
    parser.add_argument("--documents", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N training documents (0: all)")
    parser.add_argument("--vocabulary-size", type=positive, default=2048)
    parser.add_argument("--hidden-dim", type=positive, default=128,
                        help="a multiple of 8 (8 heads, split over the model axis)")
    parser.add_argument("--num-layers", type=positive, default=2)
    parser.add_argument("--sequence-length", type=positive, default=64)
    parser.add_argument("--batch-size", type=positive, default=16,
                        help="a multiple of 8 (split over 8 devices)")
    parser.add_argument("--output-json", default="out/distributed_training.json",
                        help="the numbers of the run")
    args = guide_cli.parse(parser, argv, TINY)
    if args.hidden_dim % 8:
        parser.error(f"argument --hidden-dim: must be a multiple of 8, got {args.hidden_dim}")
    if args.batch_size % 8:
        parser.error(f"argument --batch-size: must be a multiple of 8, got {args.batch_size}")
    return args


def build_lm(vocabulary_size, hidden, layers, sequence_length):
    guide_cli.set_random_seed(0)
    backbone = kbm.models.GPTBackbone(
        vocabulary_size=vocabulary_size, num_layers=layers, num_heads=8, hidden_dim=hidden,
        intermediate_dim=4 * hidden, max_sequence_length=sequence_length, dropout=0.0,
    )
    lm = kbm.models.GPTCausalLM(backbone)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.1))
    return lm


def train(name, lm, x, y, batch_size, steps):
    start = time.time()
    history = lm.fit(x[: steps * batch_size], y[: steps * batch_size], batch_size=batch_size,
                     epochs=1, shuffle=False, verbose=0)
    loss = history.history["loss"]
    print(f"{name}: {steps} steps, loss {loss[0]:.3f} (final epoch mean) in "
          f"{time.time() - start:.1f}s")
    return loss[-1]


def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before JAX starts its CPU backend.
    kbm.runtime.tune_cpu()
    if keras.backend.backend() != "jax":
        print(f"keras.distribution needs JAX (backend is {keras.backend.backend()}); "
              "see kbm.distribution.mirrored_strategy / torch_ddp_model.")
        return
    print(f"Devices: {keras.distribution.list_devices()}")

    texts = kbm.data.documents_to_texts(kbm.data.load_text("train"))
    if args.documents:
        texts = texts[:args.documents]
    vocabulary_size, hidden, layers = args.vocabulary_size, args.hidden_dim, args.num_layers
    length, batch, steps = args.sequence_length, args.batch_size, args.steps
    tokenizer = Tokenizer.train_bpe(texts, vocabulary_size=vocabulary_size)
    x, y = pack_documents(tokenizer.encode(texts), length, tokenizer.eos_token_id)
    steps = min(steps, len(x) // batch)
    print(f"Data: {len(x)} windows of {length} tokens; batch {batch}, {steps} steps.\n")

    # 1. Data parallel: a (8,) "batch" mesh, weights replicated, batches split 8 ways.
    distribution = kd.data_parallel()
    print(f"Data parallel mesh: {distribution.device_mesh}")
    lm = build_lm(tokenizer.vocabulary_size, hidden, layers, length)
    data_loss = train("data parallel (8)", lm, x, y, batch, steps)

    # 2. Model parallel: (2 data) x (4 model); the rule table decides every weight.
    distribution = kd.model_parallel(mesh_shape=(2, 4))
    print(f"\nModel parallel mesh: {distribution.device_mesh}")
    lm = build_lm(tokenizer.vocabulary_size, hidden, layers, length)
    print("How each weight is split (path, shape -> mesh axes per dimension):")
    for line in kd.describe(lm):
        if "transformer_layer_0" in line or "embedding" in line or "final_norm" in line:
            print("  " + line)
    model_loss = train("model parallel (2x4)", lm, x, y, batch, steps)
    print(f"Same model, same data: losses {data_loss:.4f} vs {model_loss:.4f}")
    keras.distribution.set_distribution(None)

    # 3. What would GPT-3 175B need? Analytic, nothing allocated. Without ZeRO or
    # pipelining every weight, gradient and Adam slot lives on the model axis only, so
    # that axis must hold 175B x 16 bytes; micro-batch 1 per data replica, 2048 tokens.
    print("\nMemory plan, GPT-3 175B (Adam, fp32 weights, bf16 activations), GiB/device:")
    print(f"  {'mesh':>9s} {'weights+grads+Adam':>19s} {'activations':>12s} {'remat':>8s} "
          f"{'total(remat)':>13s}  fits 80 GiB")
    plans = []
    for model_axis in (8, 16, 32, 48, 96):  # divisors of its 96 heads
        data_axis = 8
        plan = kd.plan_memory("gpt3-175b", mesh_shape=(data_axis, model_axis),
                              batch_size=data_axis, sequence_length=2048)
        states = plan.parameters + plan.gradients + plan.optimizer_state
        gib = 1024**3
        print(f"  {data_axis:>4d}x{model_axis:<4d} {states / gib:19.1f} "
              f"{plan.activations / gib:12.1f} {plan.activations_remat / gib:8.1f} "
              f"{plan.total_remat / gib:13.1f}  {plan.fits(80)}")
        plans.append({"mesh_shape": [data_axis, model_axis], "states_gib": states / gib,
                      "activations_gib": plan.activations / gib,
                      "total_remat_gib": plan.total_remat / gib, "fits_80_gib": plan.fits(80)})
    print(kd.plan_memory("gpt3-175b", mesh_shape=(8, 96), batch_size=8, sequence_length=2048))

    # 4. Real pods.
    print("\n" + MULTI_HOST_RECIPE)
    results = {"command": ["guides/distributed_training.py",
                           *(sys.argv[1:] if argv is None else argv)],
               "arguments": vars(args), "steps": steps,
               "data_parallel_loss": float(data_loss), "model_parallel_loss": float(model_loss),
               "gpt3_175b_memory_plans": plans}
    guide_cli.write_json(args.output_json, results)
    return results


if __name__ == "__main__":
    main()
