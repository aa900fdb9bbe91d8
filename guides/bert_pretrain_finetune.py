"""Pretrain a small BERT with masked LM + next-sentence prediction, then fine-tune it.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/bert_pretrain_finetune.py          # embedded corpus
    python guides/bert_pretrain_finetune.py --data my_texts/ --epochs 8 # your own .txt files
    python guides/bert_pretrain_finetune.py --tiny                      # a seconds-long smoke run

1. Trains a WordPiece tokenizer on the corpus (CPython's documentation, no download).
2. Builds [CLS] A [SEP] B [SEP] pairs (50% true next segment, 50% from another
   document), masks 15% of the tokens (80% [MASK] / 10% random / 10% kept, a fresh
   mask every epoch) and fits `BertPretrainer` (L = L_MLM + L_NSP) with `model.fit`.
3. Fine-tunes `BertClassifier` on a task built from the corpus: which of the longest
   documents does a held-out sentence come from? It compares against the same
   classifier trained from a random initialization.
"""

import argparse
import os
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.models import BertBackbone, BertClassifier, BertPretrainer
from keras_bigmodels.models.bert import BertPretrainingDataset
from keras_bigmodels.objectives.sentence_pairs import next_sentence_pairs, pad_examples
from keras_bigmodels.tokenizers import Tokenizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .txt file or a folder of them (default: embedded)")
    parser.add_argument("--output", default="out", help="folder for the saved models")
    parser.add_argument("--epochs", type=int, default=5, help="pretraining epochs")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocabulary-size", type=int, default=4000)
    parser.add_argument("--num-classes", type=int, default=4, help="sections to classify")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    return parser.parse_args(argv)


def load_documents(args):
    if args.data:
        return (kbm.data.load_text_files(args.data, split="train"),
                kbm.data.load_text_files(args.data, split="validation"))
    return kbm.data.load_text("train"), kbm.data.load_text("validation")


def section_task(documents, tokenizer, max_length, num_classes, rng):
    """Which of the `num_classes` longest documents does a sentence come from?

    Every 5th sentence of each document is held out for testing.
    """
    sections = sorted(documents, key=len, reverse=True)[:num_classes]
    splits = {"train": ([], []), "test": ([], [])}
    for label, document in enumerate(sections):
        for i, sentence in enumerate(document):
            ids = tokenizer.encode(sentence)[: max_length - 2]
            tokens, labels = splits["test" if i % 5 == 4 else "train"]
            tokens.append([tokenizer.cls_token_id, *ids, tokenizer.sep_token_id])
            labels.append(label)
    out = []
    for tokens, labels in splits.values():
        order = rng.permutation(len(labels))
        tokens = [tokens[i] for i in order]
        x = pad_examples(tokens, [[0] * len(t) for t in tokens], max_length,
                         tokenizer.pad_token_id)
        out += [x, np.asarray(labels, "int32")[order]]
    return out


def whole_batches(x, y, batch_size):
    """Drop the last partial batch so each model compiles one batch shape."""
    n = max(batch_size, len(y) // batch_size * batch_size)
    return {k: v[:n] for k, v in x.items()}, y[:n]


def main(argv=None):
    args = parse_args(argv)
    if args.tiny:
        args.epochs, args.finetune_epochs = 1, 1
        args.sequence_length, args.vocabulary_size = 32, 600
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    train_docs, valid_docs = load_documents(args)
    if args.tiny:
        train_docs, valid_docs = train_docs[:24], valid_docs[:6]
    print(f"backend {keras.backend.backend()}: {len(train_docs)} training documents")

    # 1. Tokenizer ---------------------------------------------------------------
    tokenizer = Tokenizer.train_wordpiece([" ".join(d) for d in train_docs],
                                          vocabulary_size=args.vocabulary_size)
    print(f"{tokenizer}")
    tokenized = [tokenizer.encode(list(d)) for d in train_docs]

    # 2. Pretraining ---------------------------------------------------------------
    pairs = next_sentence_pairs(tokenized, args.sequence_length, tokenizer.cls_token_id,
                                tokenizer.sep_token_id, tokenizer.pad_token_id, rng=rng)
    specials = [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")]
    data = BertPretrainingDataset(
        pairs, batch_size=args.batch_size, sentence_task="nsp",
        vocabulary_size=tokenizer.vocabulary_size, mask_token_id=tokenizer.mask_token_id,
        special_token_ids=specials,
    )
    size = dict(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64) if args.tiny \
        else dict(num_layers=4, num_heads=4, hidden_dim=128, intermediate_dim=512)
    backbone = BertBackbone(vocabulary_size=tokenizer.vocabulary_size,
                            max_sequence_length=args.sequence_length, **size)
    pretrainer = BertPretrainer(backbone)  # compiled: AdamW, L_MLM + L_NSP, MLM accuracy
    pretrainer.compile(learning_rate=1e-3)
    print(f"{len(pairs['labels'])} NSP pairs, {backbone.count_params():,} parameters")
    start = time.time()
    history = pretrainer.fit(data, epochs=args.epochs, verbose=1 if not args.tiny else 2)
    print(f"pretraining took {time.time() - start:.0f}s")
    for epoch, (acc, nsp) in enumerate(zip(history.history["mlm_accuracy"],
                                           history.history["nsp_accuracy"])):
        print(f"  epoch {epoch + 1}: MLM accuracy {acc:.3f}  NSP accuracy {nsp:.3f}")

    # 3. Fine-tuning -------------------------------------------------------------------
    x_train, y_train, x_test, y_test = section_task(
        train_docs, tokenizer, args.sequence_length, args.num_classes, rng)
    x_train, y_train = whole_batches(x_train, y_train, args.batch_size)
    x_test, y_test = whole_batches(x_test, y_test, args.batch_size)
    print(f"fine-tuning: {len(y_train)} sentences from the {args.num_classes} longest "
          f"documents, {len(y_test)} held out")
    encoders = [("pretrained", pretrainer.backbone)]
    if not args.tiny:  # the baseline: the same classifier without pretraining
        encoders.append(("random init", BertBackbone.from_config(backbone.get_config())))
    results = {}
    for name, encoder in encoders:
        classifier = BertClassifier.from_backbone(encoder, num_classes=args.num_classes)
        classifier.compile(learning_rate=1e-3)
        classifier.fit(x_train, y_train, batch_size=args.batch_size,
                       epochs=args.finetune_epochs, verbose=2)
        _, accuracy = classifier.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)
        results[name] = accuracy
        print(f"sentence -> section, {name} encoder: test accuracy {accuracy:.3f} "
              f"(chance {1 / args.num_classes:.2f})")

    os.makedirs(args.output, exist_ok=True)
    pretrainer.save(os.path.join(args.output, "bert_pretrainer.keras"))
    return {"pretraining": history.history, "finetune_accuracy": results}


if __name__ == "__main__":
    main()
