"""Quickstart: train a small GPT on text with `model.fit`, then generate.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/quickstart_gpt.py            # embedded corpus
    python guides/quickstart_gpt.py --data my_texts/ --steps 500 # your own .txt files
    python guides/quickstart_gpt.py --tiny                       # a seconds-long smoke run

It trains a byte-level BPE tokenizer on the corpus, packs documents separated by
<|endoftext|> into fixed windows, fits a GPT-2-style model, prints samples before and
after training, and saves the loss curve to `<output>/gpt_loss.png`.
"""

import argparse
import json
import os
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.objectives.causal_lm import CausalLMBatches
from keras_bigmodels.tokenizers import Tokenizer

PROMPTS = ["The built-in function", "A class is"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .txt file or a folder of them (default: embedded)")
    parser.add_argument("--output", default="out", help="folder for the loss curve and model")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.data:
        documents = kbm.data.load_text_files(args.data, split="train")
    else:
        documents = kbm.data.load_text("train")
    texts = kbm.data.documents_to_texts(documents)
    vocabulary_size, hidden, layers, steps, new_tokens = 4096, 128, 4, args.steps, 40
    if args.tiny:
        texts, vocabulary_size, hidden, layers, steps, new_tokens = texts[:40], 512, 32, 2, 4, 8
        args.sequence_length, args.batch_size = 48, 4

    start = time.time()
    tokenizer = Tokenizer.train_bpe(texts, vocabulary_size=vocabulary_size)
    eos = tokenizer.eos_token_id
    token_docs = tokenizer.encode(texts)
    print(f"Tokenizer: {tokenizer.vocabulary_size} tokens; corpus "
          f"{sum(map(len, token_docs)):,} tokens in {len(token_docs)} documents "
          f"({time.time() - start:.1f}s).")

    backbone = kbm.models.GPTBackbone(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=layers, num_heads=4,
        hidden_dim=hidden, intermediate_dim=4 * hidden,
        max_sequence_length=args.sequence_length, dropout=0.0,
    )
    lm = kbm.models.GPTCausalLM(backbone, tokenizer=tokenizer)
    lm.compile(optimizer=keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(0.0, steps, alpha=0.1,
                                               warmup_target=2e-3,
                                               warmup_steps=max(1, steps // 20)),
        weight_decay=0.1, beta_2=0.95, clipnorm=1.0))
    print(f"Model: {lm.count_params():,} parameters")

    print("\nSamples before training:")
    for text in lm.generate(PROMPTS, max_new_tokens=new_tokens // 2, sampler="top_k", top_k=10, seed=0):
        print("  ", repr(text))

    batches = CausalLMBatches(token_docs, args.sequence_length, eos, args.batch_size)
    steps_per_epoch = min(len(batches), steps)
    epochs = max(1, steps // steps_per_epoch)
    start = time.time()
    history = lm.fit(batches.as_dataset(), epochs=epochs, steps_per_epoch=steps_per_epoch,
                     verbose=2 if not args.tiny else 0).history
    seconds = time.time() - start
    tokens = epochs * steps_per_epoch * args.batch_size * args.sequence_length
    print(f"Trained {epochs * steps_per_epoch} steps in {seconds:.0f}s "
          f"({tokens / seconds:,.0f} tokens/s); loss {history['loss'][0]:.2f} -> "
          f"{history['loss'][-1]:.2f}, perplexity {history['perplexity'][-1]:.1f}")

    print("\nSamples after training:")
    for text in lm.generate(PROMPTS, max_new_tokens=new_tokens, sampler="top_k", top_k=10, seed=0):
        print("  ", repr(text))
    print("  greedy:", repr(lm.generate(PROMPTS[0], max_new_tokens=new_tokens // 2)))

    os.makedirs(args.output, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(5, 3.5))
    plt.plot(np.arange(1, len(history["loss"]) + 1) * steps_per_epoch, history["loss"])
    plt.xlabel("step")
    plt.ylabel("training loss (nats/token)")
    plt.title(f"GPT quickstart ({keras.backend.backend()})")
    plt.tight_layout()
    path = os.path.join(args.output, "gpt_loss.png")
    plt.savefig(path, dpi=100)
    with open(os.path.join(args.output, "gpt_history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.items()}, f)
    print(f"\nSaved the loss curve to {path}")
    return history


if __name__ == "__main__":
    main()
