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
3. Probes the frozen encoder and fine-tunes on the task of `t5_span_corruption.py` (the
   same probe, task and fine-tuning, imported from it, as are the pretraining loop, the
   loss-curve plot and the JSON): "<s>topic: <a sentence></s>" -> "<s> <the title of
   its section></s>", among the `--num-sections` longest sections, from
   `--labels-per-section` labelled sentences of each; every 3rd sentence is held out for
   testing (and left out of pretraining). The pretrained model and the same model from
   its initial weights (random init) are fine-tuned alike on `--finetune-draws` draws of
   the labelled sentences; the metric is the exact match of the title written by greedy
   `generate()`, against always answering the largest section's title (the trivial
   baseline).

Measured at the defaults (jax, seeds 0 and 1; 1,512 pretraining steps; 492 s and 480 s
on 2 otherwise idle CPU cores; rerun on 2026-12-02 with the same numbers as before), with

    KERAS_BACKEND=jax python guides/bart_denoising.py --seed 0 \
        --output out/guides_1202/bart_denoising_s0
    KERAS_BACKEND=jax python guides/bart_denoising.py --seed 1 \
        --output out/guides_1202/bart_denoising_s1

    pretraining: held-out loss 3.54 / 3.52 nats per token, against 6.31 for the unigram
        model of the targets (training loss 1.08 / 1.09: the ~1,300 examples are seen 36
        times)
    linear probe of the frozen encoder (16 labelled sentences per section, 3 draws):
        pretrained 0.546 / 0.577, initial weights 0.398 / 0.403
    fine-tuning (6 sections, 16 labelled sentences each, 3 draws, 269 test sentences):
        exact match pretrained 0.597 / 0.560, random init 0.508 / 0.473, ahead in all 6
        draws (by 0.04-0.15); always answering "String Methods" 0.320, chance 0.167;
        test loss 0.128 / 0.149 against 0.162 / 0.166

What it took (one draw of everything each, jax, seed 0): after 12 epochs (504 steps,
held-out loss 4.11) the probe already read 0.48 against 0.40, but fine-tuning from that
start answered the majority title for almost every sentence (exact match 0.21 against
0.52 from random init at the fine-tuning defaults; at the earlier 3e-4 for 20 epochs
both stayed at or below the majority). Its decoder had not yet learnt to read the
encoder: greedy `generate()` on a noised held-out example wrote fluent but unrelated
text, and a decoder that predicts from its own prefix turns fine-tuning into learning
the prior over titles. Three times the epochs (the default) gives a decoder that reads the
encoder (its greedy restoration of a held-out example copies many of the words, garbled)
and the probe 0.55; the training loss falls far below the held-out one, yet the start
transfers better. Sentence permutation on or off made no difference at 12 epochs.

`--task-format cloze` (not measured for BART; for T5 see its guide) asks in the form of
text infilling: "<s><mask>. <sentence></s>" -> "<s> <title></s>", so the decoder writes
the heading the <mask> stands for, the first tokens its denoising pretraining restores.
"""

import time

import keras

import keras_bigmodels as kbm
from keras_bigmodels.models import BartBackbone, BartSeq2SeqLM
from keras_bigmodels.objectives.denoising import BartDenoising
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli
from t5_span_corruption import (CLOZE_PREFIX, TASK_PREFIX, EpochBatches,
                                add_finetuning_arguments, add_model_arguments,
                                add_run_arguments, encoder_probe, finetune, load_documents,
                                pretrain, save_results, section_title_task, task_data,
                                unigram_loss)

# BART's (RoBERTa's) ids.
BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# `--tiny`: a smoke run that still shows the pretrained model's lower fine-tuning loss
# (tests/test_guide_bart.py).
TINY = dict(documents=40, vocabulary_size=500, sequence_length=32, num_layers=2, hidden_dim=64,
            epochs=6, batch_size=16, learning_rate=3e-3, num_sections=4, labels_per_section=8,
            finetune_epochs=15, finetune_draws=2)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    add_run_arguments(parser, "bart_denoising")
    positive, fraction = guide_cli.positive_int, guide_cli.fraction
    parser.add_argument("--vocabulary-size", type=positive, default=2000,
                        help="BPE vocabulary, special tokens included")
    parser.add_argument("--sequence-length", type=positive, default=64,
                        help="tokens per example, encoder and decoder (BART: 512)")
    parser.add_argument("--mask-ratio", type=fraction, default=0.3,
                        help="share of the tokens in masked spans (BART: 0.3)")
    add_model_arguments(parser, "feed-forward 4x", epochs=36, learning_rate=1e-3)
    add_finetuning_arguments(parser)
    return guide_cli.parse(parser, argv, TINY)


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    guide_cli.set_random_seed(args.seed)
    train_docs, valid_docs = load_documents(args)
    task, pretraining_docs = section_title_task(
        train_docs, args.num_sections,
        prefix=CLOZE_PREFIX if args.task_format == "cloze" else TASK_PREFIX)
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
    print(f"denoising: {len(data.objective)} examples of at most {args.sequence_length} "
          f"tokens; {lm.backbone.count_params():,} parameters, "
          f"{args.epochs * len(data)} steps")
    history, pretraining_seconds, steps = pretrain(lm, data, valid, args, baseline_loss)
    noisy = valid.objective.noisy(0).tolist()
    restored = lm.generate(noisy, max_new_tokens=args.sequence_length - 1)
    print(f"  a held-out example, noised: {tokenizer.decode(noisy, False)!r}\n"
          f"  restored by greedy generate(): {tokenizer.decode(restored, False)!r}")

    # 3. Fine-tuning: which section is a sentence from? ------------------------------
    # Cloze: one <mask> blanks the heading out, as text infilling masks a span; the
    # decoder writes the heading, where denoising writes the restored text.
    blank = (bos, ids["<mask>"]) if args.task_format == "cloze" else (bos,)
    task_ids = task_data(task, tokenizer, args.sequence_length, opening=blank,
                         closing=(eos,), decoder_start_token_id=eos, pad_token_id=pad,
                         answer_opening=(bos,))
    print(f"sentence -> section title: {len(task['titles'])} sections, "
          f"{args.labels_per_section} labelled sentences each, "
          f"{len(task_ids['test_answers'])} test sentences")
    starts = {"pretrained": lm.backbone.get_weights(), "random init": initial_weights}
    probe_accuracy = encoder_probe(lm.backbone, starts, task_ids, args)
    results = finetune(make_task, starts, task_ids, args)
    return save_results("bart_denoising", "BART denoising", args, argv, start_all, history,
                        pretraining_seconds, baseline_loss, task, task_ids, results, lm,
                        training_documents=len(train_docs), steps=steps,
                        vocabulary_size=tokenizer.vocabulary_size,
                        denoising_examples=len(data.objective), encoder_probe=probe_accuracy)


if __name__ == "__main__":
    main()
