"""BERT pretraining speed: keras_bigmodels vs keras-hub vs transformers, same config.

Reference config: 4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 8192,
sequence 128, batch 16, 20 masked positions per sequence (15%), dropout off everywhere:

    python benchmarks/bench_bert.py --backend jax        # or tensorflow / torch
    python benchmarks/bench_bert.py --backend torch --peak-flops 2e11 --steps 10

Each model runs in its own process so that its peak memory (max RSS) is its own:
- ours: `BertPretrainer` (MLM on the masked positions + NSP), `train_on_batch`;
- keras_hub: `BertBackbone` + `BertMaskedLM` (its MLM head, also on masked positions);
- transformers: `BertForPreTraining` (MLM logits on every position + NSP), torch eager
  with AdamW (the same on every backend: it ignores KERAS_BACKEND).
MFU = tokens/s x (6N + 12LHQT) / peak, N from `flops.count_params` (the same FLOPs per
token for all three). Writes benchmarks/results/bert_<backend>.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIG = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, max_sequence_length=128)
BATCH, SEQ, PREDICTIONS = 16, 128, 20
MODELS = ("ours", "keras_hub", "transformers")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-flops", type=float, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=MODELS)
    parser.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    return parser.parse_args()


def timed(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def batch():
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(5, CONFIG["vocabulary_size"], (BATCH, SEQ)).astype("int32")
    positions = np.sort(np.stack([rng.choice(np.arange(1, SEQ), PREDICTIONS, replace=False)
                                  for _ in range(BATCH)]), axis=1).astype("int32")
    segments = np.zeros_like(ids)
    segments[:, SEQ // 2:] = 1
    return {
        "token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids),
        "mask_positions": positions,
        "mask_ids": np.take_along_axis(ids, positions, 1),
        "mask_weights": np.ones(positions.shape, "float32"),
        "nsp": rng.integers(0, 2, BATCH).astype("int32"),
    }


def run_ours(args):
    from keras_bigmodels.models import BertBackbone, BertPretrainer

    model = BertPretrainer(BertBackbone(**CONFIG, dropout=0.0))
    b = batch()
    x = {k: b[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    y = {"mlm": b["mask_ids"], "nsp": b["nsp"]}
    sw = {"mlm": b["mask_weights"], "nsp": b["mask_weights"][:, 0]}
    return timed(lambda: model.train_on_batch(x, y, sample_weight=sw), args.steps, args.warmup)


def run_keras_hub(args):
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=CONFIG["vocabulary_size"], num_layers=CONFIG["num_layers"],
        num_heads=CONFIG["num_heads"], hidden_dim=CONFIG["hidden_dim"],
        intermediate_dim=CONFIG["intermediate_dim"],
        max_sequence_length=CONFIG["max_sequence_length"], dropout=0.0)
    model = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
    b = batch()
    x = {k: b[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    return timed(lambda: model.train_on_batch(x, b["mask_ids"], sample_weight=b["mask_weights"]),
                 args.steps, args.warmup)


def run_transformers(args):
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=CONFIG["vocabulary_size"], hidden_size=CONFIG["hidden_dim"],
        num_hidden_layers=CONFIG["num_layers"], num_attention_heads=CONFIG["num_heads"],
        intermediate_size=CONFIG["intermediate_dim"],
        max_position_embeddings=CONFIG["max_sequence_length"], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    model = transformers.BertForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = batch()
    labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
    labels.scatter_(1, torch.tensor(b["mask_positions"], dtype=torch.long),
                    torch.tensor(b["mask_ids"], dtype=torch.long))
    inputs = dict(input_ids=torch.tensor(b["token_ids"], dtype=torch.long),
                  token_type_ids=torch.tensor(b["segment_ids"], dtype=torch.long),
                  attention_mask=torch.tensor(b["padding_mask"], dtype=torch.long),
                  labels=labels, next_sentence_label=torch.tensor(b["nsp"], dtype=torch.long))

    def step():
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return timed(step, args.steps, args.warmup)


def child(args):
    seconds = {"ours": run_ours, "keras_hub": run_keras_hub,
               "transformers": run_transformers}[args.only](args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds_per_step": seconds, "peak_rss_mb": rss}))


def main():
    args = parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if args.only:
        return child(args)
    import keras_bigmodels as kbm

    config = {**CONFIG, "family": "bert"}
    flops_per_token = kbm.flops.flops_per_token(config, SEQ)
    peak = args.peak_flops or kbm.flops.measure_peak_flops()
    results = {
        "backend": args.backend,
        "config": {**CONFIG, "batch_size": BATCH, "sequence_length": SEQ,
                   "masked_positions": PREDICTIONS},
        "parameters": kbm.flops.count_params(config),
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "peak_flops_source": "argument" if args.peak_flops else "measured 2048^2 matmul",
        "steps": args.steps,
        "models": {},
    }
    for name in MODELS:
        if name in args.skip:
            continue
        command = [sys.executable, os.path.abspath(__file__), "--backend", args.backend,
                   "--only", name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode or not lines:  # a peer failing must not lose the other numbers
            results["models"][name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            print(name, "failed:", results["models"][name]["error"])
            continue
        measured = json.loads(lines[-1])
        tokens_per_second = BATCH * SEQ / measured["seconds_per_step"]
        results["models"][name] = {
            "train_tokens_per_second": tokens_per_second,
            "mfu": tokens_per_second * flops_per_token / peak,
            "peak_rss_mb": measured["peak_rss_mb"],
        }
        print(name, json.dumps(results["models"][name]))
    path = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"bert_{args.backend}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", path)


if __name__ == "__main__":
    main()
