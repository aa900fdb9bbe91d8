"""GPT training and generation speed: keras_bigmodels vs keras-hub vs transformers.

Same config, same machine, same run (reference config: 4 layers, hidden 256, 4 heads,
intermediate 1024, vocabulary 8192, sequence 256, batch 16; dropout off everywhere):

    python benchmarks/bench_gpt.py --backend jax        # or tensorflow / torch
    python benchmarks/bench_gpt.py --backend torch --peak-flops 2e11 --steps 10

Measures training tokens/s, MFU (6N + 12LHQT FLOPs per token over a peak: --peak-flops,
or a measured matmul peak), peak RSS, and generation tokens/s at batch 1 and 8 with 128
new tokens (greedy, no early stop), and beam search at batch 1 (`--num-beams`, default 4; 0
skips it). Writes benchmarks/results/gpt_<backend>.json.

Each model runs in a process of its own. Importing keras_bigmodels applies its runtime
settings to a process (glibc malloc, XLA:CPU scheduler; see keras_bigmodels/__init__.py),
so by default the peers' processes never import it and run as their users get them;
`--peer-tuning` gives them the same settings, to separate those from the models' own code.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--num-beams", type=int, default=4,
                        help="also time beam search with this many beams at batch 1 (0: skip)")
    parser.add_argument("--generate-repeats", type=int, default=3,
                        help="timed generate() calls per batch size (after one warm-up)")
    parser.add_argument("--generate-batches", type=int, nargs="*", default=[1, 8],
                        help="batch sizes of the generation timings (none: training only, "
                             "with --num-beams 0)")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--peak-flops", type=float, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ours", "keras_hub", "transformers"])
    parser.add_argument("--output", default=None)
    parser.add_argument("--only", choices=["ours", "keras_hub", "transformers"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--peer-tuning", action="store_true",
                        help="give the peers' processes keras_bigmodels' import-time runtime "
                             "settings too (malloc, XLA:CPU flags); by default each peer runs "
                             "as its own users get it")
    parser.add_argument("--flops-per-token", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (1 avoids OpenMP spin-waits on a "
                             "shared, oversubscribed CPU)")
    return parser.parse_args()


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
ENVIRONMENT = os.environ.copy()  # before keras_bigmodels adds its XLA_FLAGS
if ARGS.only in (None, "ours") or ARGS.peer_tuning:
    # Importing keras_bigmodels applies its runtime settings to the process (see its
    # __init__): a peer's process gets them only with --peer-tuning.
    import keras_bigmodels as kbm  # noqa: E402

CONFIG = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, max_sequence_length=256)
BATCH, SEQ = 16, 256


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, CONFIG["vocabulary_size"], (BATCH, SEQ + 1)).astype("int32")
    return x[:, :-1], x[:, 1:]


def keras_train(model, x, y):
    def step():
        model.train_on_batch(x, y)
    return BATCH * SEQ / timed(step, ARGS.steps, ARGS.warmup)


def ours():
    lm = kbm.models.GPTCausalLM(kbm.models.GPTBackbone(**CONFIG, dropout=0.0))
    lm.compile(optimizer=keras.optimizers.AdamW(1e-4))
    x, y = data()
    train = keras_train(lm, x, y)
    generate = {}
    for batch in ARGS.generate_batches:
        prompts = x[:batch, :ARGS.prompt_length]
        run = lambda: lm.generate(prompts, max_new_tokens=ARGS.new_tokens, stop_token_ids=None)
        generate[batch] = batch * ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    if ARGS.num_beams:
        run = lambda: lm.generate(x[:1, :ARGS.prompt_length], max_new_tokens=ARGS.new_tokens,
                                  sampler="beam", num_beams=ARGS.num_beams, stop_token_ids=None)
        generate["beam"] = ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    return train, generate


def keras_hub():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(**{k: v for k, v in CONFIG.items()}, dropout=0.0)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-4),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               sampler="greedy")
    x, y = data()
    inputs = {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}
    train = keras_train(lm, inputs, y)
    def prompts(batch):
        total = ARGS.prompt_length + ARGS.new_tokens
        ids = np.zeros((batch, total), "int32")
        ids[:, :ARGS.prompt_length] = x[:batch, :ARGS.prompt_length]
        mask = np.zeros((batch, total), bool)
        mask[:, :ARGS.prompt_length] = True
        return {"token_ids": ids, "padding_mask": mask}

    generate = {}
    for batch in ARGS.generate_batches:
        inputs_b = prompts(batch)
        run = lambda: lm.generate(inputs_b, stop_token_ids=None)
        generate[batch] = batch * ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    if ARGS.num_beams:
        lm.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=ARGS.num_beams))
        inputs_1 = prompts(1)
        run = lambda: lm.generate(inputs_1, stop_token_ids=None)
        generate["beam"] = ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    return train, generate


def transformers_peer():
    import torch
    import transformers

    config = transformers.GPT2Config(
        vocab_size=CONFIG["vocabulary_size"], n_positions=CONFIG["max_sequence_length"],
        n_embd=CONFIG["hidden_dim"], n_layer=CONFIG["num_layers"], n_head=CONFIG["num_heads"],
        n_inner=CONFIG["intermediate_dim"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = (torch.tensor(a, dtype=torch.long) for a in data())

    def step():
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    train = BATCH * SEQ / timed(step, ARGS.steps, ARGS.warmup)
    model.eval()
    generate = {}
    for batch in ARGS.generate_batches:
        prompts = x[:batch, :ARGS.prompt_length]

        def run():
            with torch.no_grad():
                model.generate(prompts, max_new_tokens=ARGS.new_tokens,
                               min_new_tokens=ARGS.new_tokens, do_sample=False,
                               pad_token_id=0, attention_mask=torch.ones_like(prompts))
        generate[batch] = batch * ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    if ARGS.num_beams:
        prompts = x[:1, :ARGS.prompt_length]

        def run():
            with torch.no_grad():
                model.generate(prompts, max_new_tokens=ARGS.new_tokens,
                               min_new_tokens=ARGS.new_tokens, do_sample=False,
                               num_beams=ARGS.num_beams, early_stopping=False,
                               pad_token_id=0, attention_mask=torch.ones_like(prompts))
        generate["beam"] = ARGS.new_tokens / timed(run, ARGS.generate_repeats, 1)
    return train, generate


def run_one(name):
    """One model in this process: prints its numbers as one JSON line."""
    if ARGS.torch_threads:
        import torch

        torch.set_num_threads(ARGS.torch_threads)
    flops_per_token, peak = ARGS.flops_per_token, ARGS.peak_flops
    train, generate = {"ours": ours, "keras_hub": keras_hub,
                       "transformers": transformers_peer}[name]()
    print(json.dumps({
        "train_tokens_per_second": train,
        "mfu": train * flops_per_token / peak,
        "peak_rss_mb": maxrss_mb(),
        "generate_tokens_per_second": {
            (f"beam_{ARGS.num_beams}_batch_1" if b == "beam" else f"batch_{b}"): v
            for b, v in generate.items()},
    }))


def main():
    if ARGS.only:
        return run_one(ARGS.only)
    if ARGS.torch_threads:
        import torch

        torch.set_num_threads(ARGS.torch_threads)
    flops_per_token = kbm.flops.flops_per_token({**CONFIG, "family": "gpt"}, SEQ)
    peak = ARGS.peak_flops or kbm.flops.measure_peak_flops()
    results = {
        "backend": ARGS.backend,
        "config": {**CONFIG, "batch_size": BATCH, "sequence_length": SEQ},
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "peak_flops_source": "argument" if ARGS.peak_flops else "measured 2048^2 matmul",
        "new_tokens": ARGS.new_tokens,
        "prompt_length": ARGS.prompt_length,
        "load_average": os.getloadavg(),
        "torch_threads": ARGS.torch_threads,
        "peer_tuning": ARGS.peer_tuning,
        "models": {},
    }
    # Each model runs in its own process, so peak RSS is that model's own.
    for name in ("ours", "keras_hub", "transformers"):
        if name in ARGS.skip:
            continue
        command = [sys.executable, os.path.abspath(__file__), "--only", name,
                   *sys.argv[1:], "--peak-flops", repr(peak),
                   "--flops-per-token", repr(flops_per_token)]
        proc = subprocess.run(command, capture_output=True, text=True, env=ENVIRONMENT)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:  # a peer failing must not lose the other numbers
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results["models"][name] = {"error": tail}
            print(name, "failed:", tail)
            continue
        results["models"][name] = json.loads(lines[-1])
        print(name, lines[-1])
    path = ARGS.output or os.path.join(os.path.dirname(__file__), "results",
                                       f"gpt_{ARGS.backend}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", path)


if __name__ == "__main__":
    main()
