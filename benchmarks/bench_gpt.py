"""GPT training and generation speed: keras_bigmodels vs keras-hub vs transformers.

Reference config: 4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 8192,
sequence 256, batch 16; dropout off everywhere; AdamW(1e-4, weight decay 0.004) everywhere
(Keras' default decay, given to torch too); no compiled metrics on any side (keras-hub's
default compile adds an accuracy over the logits, ours a perplexity: both are dropped).
Generation: 16-token prompts, 128 new tokens, greedy, no early stop, at batch 1 and 8, and
beam search (4 beams) at batch 1.

    python benchmarks/bench_gpt.py --backend jax --tuning ours      # or tensorflow / torch
    python benchmarks/bench_gpt.py --backend jax --tuning none --rounds 5 --steps 4
    python benchmarks/bench_gpt.py --backend jax --contenders ours --baseline-ref HEAD~1 \\
        --generate-batches --num-beams 0            # our training, before vs after a change
    python benchmarks/bench_gpt.py --backend jax --scaling --grid reduced   # scaling plots

Every contender runs in its own process through `harness.py` (alternating rounds, medians
with min-max, JSON with commit, machine and load). MFU = tokens/s x (6N + 12LHQT) / the
matmul peak measured at the start of the run, N the matmul parameters (tied output table
once, no position table). Writes benchmarks/results/gpt_<backend>_<tuning>.json, and with
`--scaling` gpt_scaling_<backend>_<tuning>.json plus PNG plots next to it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, max_sequence_length=256)
BATCH, SEQUENCE = 16, 256
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.004
CONTENDERS = ("ours", "keras_hub", "transformers")
SCALING_GRIDS = {
    # Training: tokens per step held at 4,096 (batch x length) so that the curve shows
    # what length costs per token; width: hidden 256 / 512 / 1024 at 4 layers (heads of 64).
    "full": dict(sequence=[128, 256, 512, 1024, 2048], width=[256, 512, 1024],
                 batch=[1, 2, 4, 8, 16, 32], new_tokens=[32, 64, 128, 256, 512]),
    "reduced": dict(sequence=[128, 512, 2048], width=[256, 1024], batch=[1, 8, 32],
                    new_tokens=[32, 256]),
    "smoke": dict(sequence=[64, 128], width=[64, 128], batch=[1, 2], new_tokens=[4, 8]),
}
TOKENS_PER_TRAINING_STEP = 4096


def flops_per_token(config, sequence_length):
    """Training FLOPs per token, 6N + 12LHQT (PaLM/nanoGPT), N without the position table."""
    d, f, layers = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d  # attention, MLP, 2 norms
    matmul_params = config["vocabulary_size"] * d + layers * block + 2 * d
    return 6 * matmul_params + 12 * layers * d * sequence_length


# ------------------------------------------------------------------------------------
# Setup functions: run inside the contenders' own processes (see harness.py).

def _data(config, batch, sequence):
    import numpy as np

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config["vocabulary_size"], (batch, sequence + 1)).astype("int32")
    return tokens[:, :-1], tokens[:, 1:]


def _generation_name(job):
    if job.get("beams"):
        return f"beam{job['beams']}_b{job['batch']}_n{job['new_tokens']}"
    return f"generate_b{job['batch']}_n{job['new_tokens']}"


def _prompts(config, job):
    import numpy as np

    rng = np.random.default_rng(1)
    return rng.integers(0, config["vocabulary_size"],
                        (job["batch"], job["prompt_length"])).astype("int32")


def setup_ours(config, batch, sequence, train=True, generate=()):
    import keras
    import keras_bigmodels as kbm

    lm = kbm.models.GPTCausalLM(kbm.models.GPTBackbone(**config, dropout=0.0))
    lm.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
               metrics=[])
    measures = {}
    if train:
        x, y = _data(config, batch, sequence)
        measures["train"] = harness.Measure(harness.keras_train_step(lm, x, y), batch * sequence)
    for job in generate:
        prompts = _prompts(config, job)
        options = dict(sampler="beam", num_beams=job["beams"]) if job.get("beams") else {}

        def step(prompts=prompts, job=job, options=options):
            lm.generate(prompts, max_new_tokens=job["new_tokens"], stop_token_ids=None,
                        **options)
        measures[_generation_name(job)] = harness.Measure(step, job["batch"] * job["new_tokens"])
    return measures, {"parameters": lm.count_params(),
                      "fused_loss": bool(getattr(lm, "_fused_loss", False))}


def setup_keras_hub(config, batch, sequence, train=True, generate=()):
    import keras
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(**config, dropout=0.0)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    state = {}

    def compile_with(sampler):
        # weighted_metrics=[]: its default compile adds an accuracy over the logits each
        # step. The sampler is a compile option in keras-hub, so beam search recompiles
        # (outside the timed steps: the first round's warm-up covers the rebuild).
        lm.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   weighted_metrics=[], sampler=sampler)
        state["sampler"] = sampler

    compile_with("greedy")
    measures = {}
    if train:
        x, y = _data(config, batch, sequence)
        inputs = {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}
        measures["train"] = harness.Measure(harness.keras_train_step(lm, inputs, y),
                                            batch * sequence)
    samplers = {}
    for job in generate:
        # keras-hub generates up to the length of its input: prompt, then empty slots.
        total = job["prompt_length"] + job["new_tokens"]
        ids = np.zeros((job["batch"], total), "int32")
        ids[:, :job["prompt_length"]] = _prompts(config, job)
        mask = np.zeros((job["batch"], total), bool)
        mask[:, :job["prompt_length"]] = True
        beams = job.get("beams")
        if beams and beams not in samplers:
            samplers[beams] = keras_hub.samplers.BeamSampler(num_beams=beams)

        def step(inputs={"token_ids": ids, "padding_mask": mask}, beams=beams):
            wanted = samplers[beams] if beams else "greedy"
            if state["sampler"] != wanted:
                compile_with(wanted)
            lm.generate(inputs, stop_token_ids=None)
        measures[_generation_name(job)] = harness.Measure(step, job["batch"] * job["new_tokens"])
    return measures, {"parameters": lm.count_params()}


def setup_transformers(config, batch, sequence, train=True, generate=()):
    import torch
    import transformers

    gpt_config = transformers.GPT2Config(
        vocab_size=config["vocabulary_size"], n_positions=config["max_sequence_length"],
        n_embd=config["hidden_dim"], n_layer=config["num_layers"], n_head=config["num_heads"],
        n_inner=config["intermediate_dim"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(gpt_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    measures = {}
    if train:
        x, y = (torch.tensor(a, dtype=torch.long) for a in _data(config, batch, sequence))

        def train_step():
            model.train()
            logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     y.reshape(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        measures["train"] = harness.Measure(train_step, batch * sequence)
    for job in generate:
        prompts = torch.tensor(_prompts(config, job), dtype=torch.long)
        options = (dict(num_beams=job["beams"], early_stopping=False) if job.get("beams")
                   else {})

        def step(prompts=prompts, job=job, options=options):
            model.eval()
            with torch.no_grad():
                model.generate(prompts, max_new_tokens=job["new_tokens"],
                               min_new_tokens=job["new_tokens"], do_sample=False,
                               pad_token_id=0, attention_mask=torch.ones_like(prompts),
                               **options)
        measures[_generation_name(job)] = harness.Measure(step, job["batch"] * job["new_tokens"])
    return measures, {"parameters": sum(p.numel() for p in model.parameters())}


SETUPS = {"ours": "setup_ours", "keras_hub": "setup_keras_hub",
          "transformers": "setup_transformers"}
LABELS = {"ours": "keras_bigmodels", "keras_hub": "keras-hub GPT2CausalLM",
          "transformers": "transformers GPT2LMHeadModel"}


def contenders(names, backend, **kwargs):
    return [harness.Contender(name, "bench_gpt", SETUPS[name], library=name,
                              framework="torch" if name == "transformers" else backend,
                              kwargs=kwargs, label=LABELS[name]) for name in names]


# ------------------------------------------------------------------------------------
# Driver.

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                        choices=CONTENDERS)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--generate-batches", type=int, nargs="*", default=[1, 8],
                        help="batch sizes of the greedy generation timings (none: skip)")
    parser.add_argument("--num-beams", type=int, default=4,
                        help="also time beam search with this many beams at batch 1 (0: skip)")
    parser.add_argument("--no-train", action="store_true", help="generation timings only")
    parser.add_argument("--scaling", action="store_true",
                        help="run the scaling grid (sequence length, width, generation batch "
                             "and new tokens) instead of the reference config, and plot it")
    parser.add_argument("--grid", default="reduced", choices=sorted(SCALING_GRIDS),
                        help="scaling grid: 'full' as in the issue, 'reduced' for 2 cores")
    return parser.parse_args(argv)


def reference(args):
    generate = [dict(batch=b, new_tokens=args.new_tokens, prompt_length=args.prompt_length)
                for b in args.generate_batches]
    if args.num_beams:
        generate.append(dict(batch=1, new_tokens=args.new_tokens,
                             prompt_length=args.prompt_length, beams=args.num_beams))
    config = dict(CONFIG)
    config["max_sequence_length"] = max(SEQUENCE, args.prompt_length + args.new_tokens)
    kwargs = dict(config=config, batch=BATCH, sequence=SEQUENCE, train=not args.no_train,
                  generate=generate)
    notes = [
        "Same work per training step on every side: next-token cross-entropy over the full "
        "vocabulary at every position (ours fuses the output layer and the loss; the FLOPs "
        "are the same), no compiled metrics, AdamW(1e-4, weight decay 0.004).",
        "transformers is plain PyTorch eager whatever the Keras backend.",
    ]
    return harness.run("gpt", contenders(args.contenders, args.backend, **kwargs), args,
                       config={**kwargs}, notes=notes,
                       flops_per_unit={"train": flops_per_token(config, SEQUENCE)},
                       measure_order=["train"] + [_generation_name(j) for j in generate])


def scaling_points(grid, args):
    """[(axis, x value, kwargs of the setups, FLOPs per token or None)] of a grid."""
    points = []
    base = dict(CONFIG)
    if args.grid == "smoke":  # only to try the plots: a toy model
        base.update(vocabulary_size=512, hidden_dim=64, intermediate_dim=256, num_heads=2,
                    num_layers=2)
    for length in grid["sequence"]:
        config = {**base, "max_sequence_length": length}
        batch = max(1, TOKENS_PER_TRAINING_STEP // length)
        points.append(("sequence_length", length,
                       dict(config=config, batch=batch, sequence=length, train=True),
                       flops_per_token(config, length)))
    for width in grid["width"]:
        config = {**base, "hidden_dim": width, "intermediate_dim": 4 * width,
                  "num_heads": max(1, width // 64), "num_layers": base["num_layers"]}
        points.append(("width", width,
                       dict(config=config, batch=BATCH, sequence=SEQUENCE, train=True),
                       flops_per_token(config, SEQUENCE)))
    for batch in grid["batch"]:
        job = dict(batch=batch, new_tokens=args.new_tokens, prompt_length=args.prompt_length)
        config = {**base, "max_sequence_length": max(SEQUENCE, args.prompt_length
                                                     + args.new_tokens)}
        points.append(("generation_batch", batch,
                       dict(config=config, batch=1, sequence=1, train=False, generate=[job]),
                       None))
    for new_tokens in grid["new_tokens"]:
        job = dict(batch=1, new_tokens=new_tokens, prompt_length=args.prompt_length)
        config = {**base, "max_sequence_length": max(SEQUENCE, args.prompt_length
                                                     + new_tokens)}
        points.append(("generation_new_tokens", new_tokens,
                       dict(config=config, batch=1, sequence=1, train=False, generate=[job]),
                       None))
    return points


def scaling(args):
    import json

    grid = SCALING_GRIDS[args.grid]
    frameworks = {"transformers": "torch"}
    peaks = harness.measure_peaks([frameworks.get(n, args.backend) for n in args.contenders],
                                  args.tuning, args.backend, args.peak_flops,
                                  args.torch_threads)
    path = args.output or os.path.join(harness.RESULTS_DIR,
                                       f"gpt_scaling_{args.backend}_{args.tuning}.json")
    summary = {"harness_version": harness.HARNESS_VERSION, "benchmark": "gpt_scaling",
               "backend": args.backend, "tuning": args.tuning, "grid_name": args.grid,
               "grid": grid, "tokens_per_training_step": TOKENS_PER_TRAINING_STEP,
               "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
               "peak_flops": peaks, "points": []}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    for axis, value, kwargs, flops in scaling_points(grid, args):
        print(f"== {axis} = {value}", flush=True)
        measure = "train" if kwargs["train"] else _generation_name(kwargs["generate"][0])
        result = harness.run(
            "gpt_scaling", contenders(args.contenders, args.backend, **kwargs), args,
            config=kwargs, flops_per_unit={"train": flops} if flops else None,
            write=False, peaks=peaks)
        summary["points"].append({"axis": axis, "value": value, "measure": measure,
                                  "result": result})
        with open(path, "w") as f:  # after every point: a long grid keeps what it measured
            json.dump(summary, f, indent=1)
    print("wrote", path)
    import render

    for png in render.plot_scaling(path):
        print("wrote", png)


def main(argv=None):
    args = parse_args(argv)
    if args.scaling:
        return scaling(args)
    return reference(args)


if __name__ == "__main__":
    main()
