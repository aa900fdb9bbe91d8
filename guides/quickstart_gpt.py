"""Quickstart: train a small GPT on text with `model.fit`, then generate.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/quickstart_gpt.py            # embedded corpus
    python guides/quickstart_gpt.py --data my_texts/ --steps 500 # your own .txt files
    python guides/quickstart_gpt.py --tiny                       # a seconds-long smoke run

It trains a byte-level BPE tokenizer on the corpus, packs documents separated by
<|endoftext|> into fixed windows, fits a GPT-2-style model, prints samples before and
after training, and saves to `<output>/`: the trained model (`gpt_quickstart.keras`,
tokenizer included), the loss curve (`gpt_loss.png`: the training loss of every logged
interval and the held-out loss measured at the same steps) and the numbers
(`quickstart_gpt.json`). The held-out loss is compared with a unigram model's
(token frequencies of the training text), the loss of a model that learnt no context.
"""

import os
import sys
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.objectives.causal_lm import CausalLMBatches, pack_documents
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli

PROMPTS = ["The built-in function", "A class is"]

# `--tiny`: seconds, and still enough steps to beat the unigram baseline (see the test).
TINY = dict(steps=60, log_every=10, documents=40, vocabulary_size=512, hidden_dim=32,
            num_layers=2, sequence_length=48, batch_size=8, new_tokens=8,
            heldout_windows=32, learning_rate=1e-2)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .txt file or a folder of them; none: the embedded "
                        "CPython documentation")
    parser.add_argument("--documents", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N training documents (0: all)")
    parser.add_argument("--output", default="out",
                        help="folder for the model, the loss curve and the numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/quickstart_gpt.json)")
    positive = guide_cli.positive_int
    parser.add_argument("--steps", type=positive, default=300, help="training steps")
    parser.add_argument("--log-every", type=positive, default=20,
                        help="steps between points of the loss curve (held-out loss "
                        "measured at each)")
    parser.add_argument("--sequence-length", type=positive, default=128,
                        help="tokens per training window")
    parser.add_argument("--batch-size", type=positive, default=16, help="windows per step")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=2e-3,
                        help="peak (warmup over 5%% of the steps, then cosine decay)")
    parser.add_argument("--vocabulary-size", type=positive, default=4096,
                        help="byte-level BPE vocabulary")
    parser.add_argument("--num-layers", type=positive, default=4, help="decoder layers")
    parser.add_argument("--hidden-dim", type=positive, default=128,
                        help="model width (4 heads, feed-forward 4x)")
    parser.add_argument("--heldout-windows", type=positive, default=64,
                        help="windows of held-out documents for the held-out loss")
    parser.add_argument("--new-tokens", type=positive, default=40,
                        help="tokens generated per sample")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, batches and samples")
    args = guide_cli.parse(parser, argv, TINY)
    if args.hidden_dim % 4:
        parser.error(f"argument --hidden-dim: must be a multiple of 4 (4 heads), "
                     f"got {args.hidden_dim}")
    return args


def unigram_loss(train_windows, heldout_targets, vocabulary_size):
    """Held-out cross-entropy (nats/token) of the training text's token frequencies.

    Add-one smoothed, so that tokens unseen in training cost a finite amount.
    """
    counts = np.bincount(np.ravel(train_windows), minlength=vocabulary_size) + 1.0
    log_probabilities = np.log(counts / counts.sum())
    return float(-log_probabilities[np.ravel(heldout_targets)].mean())


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    guide_cli.set_random_seed(args.seed)
    if args.data:
        documents = kbm.data.load_text_files(args.data, split="train")
        heldout_documents = kbm.data.load_text_files(args.data, split="validation")
    else:
        documents, heldout_documents = kbm.data.load_text("train"), kbm.data.load_text(
            "validation")
    if args.documents:
        documents = documents[:args.documents]
    texts = kbm.data.documents_to_texts(documents)

    start = time.time()
    # Deterministic: the same texts give the same tokenizer (and data) on every run.
    tokenizer = Tokenizer.train_bpe(texts, vocabulary_size=args.vocabulary_size)
    eos = tokenizer.eos_token_id
    token_docs = tokenizer.encode(texts)
    print(f"Tokenizer: {tokenizer.vocabulary_size} tokens; corpus "
          f"{sum(map(len, token_docs)):,} tokens in {len(token_docs)} documents "
          f"({time.time() - start:.1f}s).")
    heldout_x, heldout_y = pack_documents(
        tokenizer.encode(kbm.data.documents_to_texts(heldout_documents)),
        args.sequence_length, eos)
    heldout_x, heldout_y = heldout_x[:args.heldout_windows], heldout_y[:args.heldout_windows]
    train_x, _ = pack_documents(token_docs, args.sequence_length, eos)
    baseline = unigram_loss(train_x, heldout_y, tokenizer.vocabulary_size)
    print(f"Held out: {heldout_x.size:,} tokens of other documents; a unigram model scores "
          f"{baseline:.2f} nats/token there.")

    backbone = kbm.models.GPTBackbone(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=args.num_layers, num_heads=4,
        hidden_dim=args.hidden_dim, intermediate_dim=4 * args.hidden_dim,
        max_sequence_length=args.sequence_length, dropout=0.0,
    )
    lm = kbm.models.GPTCausalLM(backbone, tokenizer=tokenizer)
    # Each Keras "epoch" is one logging interval: fit then records the mean training loss
    # of its steps and the held-out loss after them, one point of the curve each.
    log_every = min(args.log_every, args.steps)
    intervals = max(1, args.steps // log_every)
    steps = intervals * log_every
    lm.compile(optimizer=keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(0.0, steps, alpha=0.1,
                                               warmup_target=args.learning_rate,
                                               warmup_steps=max(1, steps // 20)),
        weight_decay=0.1, beta_2=0.95, clipnorm=1.0))
    print(f"Model: {lm.count_params():,} parameters")

    new_tokens = args.new_tokens
    print("\nSamples before training:")
    for text in lm.generate(PROMPTS, max_new_tokens=max(1, new_tokens // 2), sampler="top_k",
                            top_k=10, seed=0):
        print("  ", repr(text))

    batches = CausalLMBatches(token_docs, args.sequence_length, eos, args.batch_size,
                              seed=args.seed)
    start = time.time()
    # shuffle=False: the generator shuffles (and re-cuts) the windows itself.
    history = lm.fit(batches.as_dataset(), epochs=intervals, steps_per_epoch=log_every,
                     shuffle=False,
                     validation_data=(heldout_x, heldout_y),
                     validation_batch_size=args.batch_size,
                     verbose=2 if not args.tiny else 0).history
    seconds = time.time() - start
    tokens = steps * args.batch_size * args.sequence_length
    print(f"Trained {steps} steps in {seconds:.0f}s ({tokens / seconds:,.0f} tokens/s, "
          f"held-out evaluation included); training loss {history['loss'][0]:.2f} -> "
          f"{history['loss'][-1]:.2f}; held-out loss {history['val_loss'][-1]:.2f} "
          f"(perplexity {np.exp(history['val_loss'][-1]):.1f}; unigram {baseline:.2f})")

    print("\nSamples after training:")
    samples = lm.generate(PROMPTS, max_new_tokens=new_tokens, sampler="top_k", top_k=10,
                          seed=0)
    for text in samples:
        print("  ", repr(text))
    greedy = lm.generate(PROMPTS[0], max_new_tokens=max(1, new_tokens // 2))
    print("  greedy:", repr(greedy))

    os.makedirs(args.output, exist_ok=True)
    model_path = os.path.join(args.output, "gpt_quickstart.keras")
    guide_cli.save_model(lm, model_path)
    print(f"\nSaved the model to {model_path} (keras.saving.load_model reads it back)")
    curve_steps = [log_every * (i + 1) for i in range(intervals)]
    figure = save_loss_curve(os.path.join(args.output, "gpt_loss.png"), curve_steps,
                             history, baseline, log_every)
    print(f"Saved the loss curve to {figure}")
    results = {
        "command": ["guides/quickstart_gpt.py", *(sys.argv[1:] if argv is None else argv)],
        "backend": keras.backend.backend(), "arguments": vars(args),
        "vocabulary_size": tokenizer.vocabulary_size, "parameters": int(lm.count_params()),
        "steps": steps, "seconds": seconds, "tokens_per_second": tokens / seconds,
        "curve_steps": curve_steps,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "heldout_loss": float(history["val_loss"][-1]), "unigram_heldout_loss": baseline,
        "samples": list(samples), "greedy": greedy, "model_path": model_path,
    }
    guide_cli.write_json(args.output_json or os.path.join(args.output, "quickstart_gpt.json"),
                         results)
    return results


def save_loss_curve(path, steps, history, baseline, log_every):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(5.5, 3.8))
    plt.plot(steps, history["loss"], "o-", markersize=3,
             label=f"training (mean of each {log_every} steps)")
    plt.plot(steps, history["val_loss"], "s-", markersize=3, label="held-out documents")
    plt.axhline(baseline, color="gray", linestyle="--", label="unigram model, held out")
    plt.xlabel("step")
    plt.ylabel("loss (nats/token)")
    plt.title(f"GPT quickstart ({keras.backend.backend()})")
    plt.legend(fontsize=8)
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close()
    return path


if __name__ == "__main__":
    main()
