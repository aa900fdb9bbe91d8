"""Pretrain a small BART by denoising (text infilling + sentence permutation), then fine-tune it.

Runs on any backend in a few minutes on 2 CPU cores (jax); writes its numbers to
`<output>/bart_denoising.json` and the loss curves to `<output>/bart_denoising.png`:

    KERAS_BACKEND=jax python guides/bart_denoising.py           # embedded corpus
    python guides/bart_denoising.py --data my_texts/ --epochs 20 # your own .txt files
    python guides/bart_denoising.py --tiny                       # a seconds-long smoke run

1. Trains a byte-level BPE tokenizer on the corpus (CPython's documentation, no
   download) with BART's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4).
2. Pretrains `BartSeq2SeqLM` to reconstruct documents from noised copies
   (`objectives.denoising.BartDenoising`, after fairseq): documents are cut into examples
   <s> ... </s> of `--sequence-length` tokens; their sentences (ended by ".") are
   shuffled, then spans with Poisson(3) lengths covering 30% of the tokens are each
   replaced by one <mask> (a zero-length span inserts one), BART's large-scale setup.
   The decoder writes the original example. The noise is drawn afresh every epoch; the
   held-out documents, noised once, give the held-out loss of the curve.
3. Fine-tunes on the task of `t5_span_corruption.py` (the same task, imported from it):
   "<s>topic: <a sentence></s>" -> "<s> <the title of its section></s>", among the
   `--num-sections` longest sections, from `--labels-per-section` labelled sentences of
   each; every 3rd sentence is held out for testing (and left out of pretraining). The
   pretrained model and the same model from its initial weights (random init) are
   fine-tuned alike on `--finetune-draws` draws of the labelled sentences; the metric is
   the exact match of the title written by greedy `generate()`, against always answering
   the largest section's title (the trivial baseline).

Measured at the defaults (jax, seed 0, one run; 504 pretraining steps; 1,385 s on 2 CPU
cores shared with other jobs at a load average of ~15, 3.5 CPU-minutes), with

    KERAS_BACKEND=jax python guides/bart_denoising.py --output out

    pretraining: held-out loss 4.11 nats per token (from 5.99 after the first epoch)
    fine-tuning (6 sections, 16 labelled sentences each, 3 draws, 269 test sentences):
        test loss pretrained 0.173, random init 0.766; exact match pretrained 0.134
        (0.104-0.149), random init 0.102 (0.019-0.149); always answering
        "String Methods" 0.320, chance 0.167

The pretrained model learns to write the titles in far fewer steps (its test loss), but
neither model picks the right section better than the majority answer: at this size and
budget BART has not yet learnt to copy its input (greedy `generate()` on a noised
held-out example writes fluent but unrelated text).
"""

import os
import sys
import time

import keras

import keras_bigmodels as kbm
from keras_bigmodels.models import BartBackbone, BartSeq2SeqLM
from keras_bigmodels.objectives.denoising import BartDenoising
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli
from t5_span_corruption import (EpochBatches, add_finetuning_arguments, finetune,
                                load_documents, report, save_loss_curves, section_title_task,
                                task_data, task_summary, unigram_loss, warmup_cosine)

# BART's (RoBERTa's) ids.
BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# `--tiny`: a smoke run that still shows the pretrained model's lower fine-tuning loss
# (tests/test_guide_bart.py).
TINY = dict(documents=40, vocabulary_size=500, sequence_length=32, num_layers=2, hidden_dim=64,
            epochs=6, batch_size=16, learning_rate=3e-3, num_sections=4, labels_per_section=8,
            finetune_epochs=15, finetune_draws=2)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .txt file or a folder of them; none: the embedded "
                        "CPython documentation")
    parser.add_argument("--documents", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N training documents (0: all)")
    parser.add_argument("--output", default="out", help="folder for the numbers and the plot")
    parser.add_argument("--output-json", help="the numbers of the run "
                        "(default: <output>/bart_denoising.json)")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, noise and the draws of labelled sentences")
    positive, fraction = guide_cli.positive_int, guide_cli.fraction
    parser.add_argument("--vocabulary-size", type=positive, default=2000,
                        help="BPE vocabulary, special tokens included")
    parser.add_argument("--sequence-length", type=positive, default=64,
                        help="tokens per example, encoder and decoder (BART: 512)")
    parser.add_argument("--mask-ratio", type=fraction, default=0.3,
                        help="share of the tokens in masked spans (BART: 0.3)")
    parser.add_argument("--num-layers", type=positive, default=3,
                        help="encoder layers (and as many decoder layers)")
    parser.add_argument("--hidden-dim", type=positive, default=128,
                        help="model width (a head per 32, feed-forward 4x)")
    parser.add_argument("--epochs", type=positive, default=12, help="pretraining epochs")
    parser.add_argument("--batch-size", type=positive, default=32, help="pretraining")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=1e-3,
                        help="peak, pretraining (warmup, then cosine decay)")
    parser.add_argument("--warmup", type=fraction, default=0.1, help="fraction of the steps")
    add_finetuning_arguments(parser)
    return guide_cli.parse(parser, argv, TINY)


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    guide_cli.set_random_seed(args.seed)
    train_docs, valid_docs = load_documents(args)
    task, pretraining_docs = section_title_task(train_docs, args.num_sections)
    print(f"backend {keras.backend.backend()}: {len(train_docs)} training documents")
    start_all = time.time()

    # 1. Tokenizer (deterministic) ----------------------------------------------------
    tokenizer = Tokenizer.train_bpe([" ".join(d) for d in pretraining_docs],
                                    vocabulary_size=args.vocabulary_size,
                                    special_tokens=BART_SPECIALS)
    ids = {token: tokenizer.token_to_id(token) for token in ("<s>", "<pad>", "</s>", "<mask>")}
    bos, pad, eos = ids["<s>"], ids["<pad>"], ids["</s>"]
    full_stop = tokenizer.token_to_id(".")
    print(f"{tokenizer}")

    # 2. Denoising pretraining ---------------------------------------------------------
    tokenize = lambda docs: tokenizer.encode([" ".join(d) for d in docs])  # noqa: E731
    objective = dict(max_length=args.sequence_length, mask_token_id=ids["<mask>"],
                     bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                     decoder_start_token_id=eos, mask_ratio=args.mask_ratio,
                     poisson_lambda=3.0, permute_sentence_ratio=1.0,
                     full_stop_ids=[full_stop] if full_stop is not None else [])
    data = EpochBatches(BartDenoising(tokenize(pretraining_docs), seed=args.seed, **objective),
                        args.batch_size, args.seed)
    valid = EpochBatches(BartDenoising(tokenize(valid_docs), seed=args.seed + 1, **objective),
                         args.batch_size, args.seed, shuffle=False)
    baseline_loss = unigram_loss(data, valid)
    width = args.hidden_dim

    def make_task(dropout=0.0):
        backbone = BartBackbone(
            vocabulary_size=tokenizer.vocabulary_size, num_layers=args.num_layers,
            num_heads=max(1, width // 32), hidden_dim=width, intermediate_dim=4 * width,
            max_sequence_length=args.sequence_length, dropout=dropout)
        return BartSeq2SeqLM(backbone, decoder_start_token_id=eos, eos_token_id=eos,
                             pad_token_id=pad)

    lm = make_task()
    # The random-init model of the comparison starts where pretraining started.
    initial_weights = lm.backbone.get_weights()
    steps = args.epochs * len(data)
    lm.compile(optimizer=keras.optimizers.AdamW(
        warmup_cosine(args.learning_rate, steps, args.warmup), weight_decay=0.01,
        clipnorm=1.0))
    print(f"denoising: {len(data.objective)} examples of at most {args.sequence_length} "
          f"tokens; {lm.backbone.count_params():,} parameters, {steps} steps")
    start = time.time()
    history = lm.fit(data, epochs=args.epochs, validation_data=valid,
                     verbose=2 if not args.tiny else 0).history
    pretraining_seconds = time.time() - start
    print(f"pretraining took {pretraining_seconds:.0f}s: loss {history['loss'][0]:.2f} -> "
          f"{history['loss'][-1]:.2f}, held out {history['val_loss'][-1]:.2f} (unigram "
          f"model of the targets {baseline_loss:.2f})")
    noisy = valid.objective.noisy(0).tolist()
    restored = lm.generate(noisy, max_new_tokens=args.sequence_length - 1)
    print(f"  a held-out example, noised: {tokenizer.decode(noisy, False)!r}\n"
          f"  restored by greedy generate(): {tokenizer.decode(restored, False)!r}")

    # 3. Fine-tuning: which section is a sentence from? ------------------------------
    task_ids = task_data(task, tokenizer, args.sequence_length, opening=(bos,),
                         closing=(eos,), decoder_start_token_id=eos, pad_token_id=pad)
    print(f"sentence -> section title: {len(task['titles'])} sections, "
          f"{args.labels_per_section} labelled sentences each, "
          f"{len(task_ids['test_answers'])} test sentences")
    results = finetune(make_task, {"pretrained": lm.backbone.get_weights(),
                                   "random init": initial_weights}, task_ids, args)
    means, losses = report(results, task_ids)
    seconds = time.time() - start_all
    print(f"{seconds:.0f}s in all")

    os.makedirs(args.output, exist_ok=True)
    figure = save_loss_curves(os.path.join(args.output, "bart_denoising.png"),
                              "BART denoising", history,
                              {name: r["curve"] for name, r in results.items()},
                              baseline_loss)
    print(f"saved {figure}")
    summary = {
        "command": ["guides/bart_denoising.py", *(sys.argv[1:] if argv is None else argv)],
        "backend": keras.backend.backend(), "arguments": vars(args),
        "vocabulary_size": tokenizer.vocabulary_size,
        "training_documents": len(train_docs), "examples": len(data.objective),
        "steps": steps, "parameters": lm.backbone.count_params(),
        "pretraining_seconds": pretraining_seconds, "seconds": seconds,
        "pretraining": {k: [float(v) for v in vs] for k, vs in history.items()},
        "heldout_pretraining_loss": float(history["val_loss"][-1]),
        "unigram_heldout_loss": baseline_loss,
        **task_summary(task, task_ids, results, means, losses),
        "figure": figure,
    }
    guide_cli.write_json(args.output_json or os.path.join(args.output, "bart_denoising.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
