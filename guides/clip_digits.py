"""Train a small CLIP on handwritten digits and their captions, then classify zero-shot.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/clip_digits.py      # embedded digits, ~3 minutes
    python guides/clip_digits.py --tiny                 # a seconds-long smoke run

scikit-learn's 1,797 8x8 digits (embedded, no download) are upsampled to 16x16 and each
training image gets a caption drawn from a few templates ("a handwritten digit seven",
"a picture of the number seven", ...), fresh every epoch. `CLIPContrastiveTask` trains
both towers with CLIP's symmetric InfoNCE loss with `model.fit`. On the held-out digits
it then reports, each next to its baseline:

* zero-shot accuracy: each class is the mean text embedding of prompts built from its
  name (`zero_shot_weights`), one of them a wording never seen in training; the
  prediction is the most similar class (chance: 10%);
* a linear probe: logistic regression on the same image embeddings, trained on the
  training images' labels (what the labels would buy beyond the captions);
* retrieval recall@1 among the test pairs, image->text and text->image, where a hit is a
  caption (image) of the same digit (chance: the share of that digit);

writes the numbers to `<output>/clip_digits.json` and saves `<output>/clip_digits.png`,
the similarity matrix of test images (sorted by digit) against the ten class prompts.
"""

import os
import sys
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.data.images import caption, load_digits
from keras_bigmodels.models import CLIPBackbone, CLIPContrastiveTask
from keras_bigmodels.models.clip import pack_texts
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli

# Training captions: the data module's own caption and a few rewordings.
CAPTION_TEMPLATES = ("{caption}", "a picture of the number {name}", "the digit {name}",
                     "a {name} written by hand")
# Zero-shot prompts: a training wording and one never seen in training.
ZERO_SHOT_TEMPLATES = ("a handwritten digit {}", "a photo of a {}")
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
SEQUENCE_LENGTH = 12

# `--tiny`: seconds, and still enough to beat chance zero-shot (see the test).
TINY = dict(epochs=10, train_images=600, test_images=200, batch_size=32,
            learning_rate=1e-3)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--output", default="out", help="folder for the figure and numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/clip_digits.json)")
    positive = guide_cli.positive_int
    parser.add_argument("--epochs", type=positive, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=positive, default=64,
                        help="pairs per batch (every other pair is a negative)")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=1e-3,
                        help="AdamW peak, cosine decay to 0")
    parser.add_argument("--width", type=positive, default=64,
                        help="both towers' hidden size (2 layers each)")
    parser.add_argument("--train-images", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N training images (0: all)")
    parser.add_argument("--test-images", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N test images (0: all)")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, captions and shuffling")
    args = guide_cli.parse(parser, argv, TINY)
    if args.width % 4:
        parser.error(f"--width must be a multiple of 4 (4 heads); got {args.width}")
    return args


def captions_for(labels, rng, names):
    """One caption per label, each from a random template."""
    choices = rng.randint(len(CAPTION_TEMPLATES), size=len(labels))
    return [CAPTION_TEMPLATES[c].format(caption=caption(y), name=names[y])
            for c, y in zip(choices, labels)]


def build(args, vocabulary_size, eos_token_id):
    width = args.width
    return CLIPBackbone(
        image_size=16, patch_size=4, num_channels=1, vision_num_layers=2,
        vision_num_heads=4, vision_hidden_dim=width, vision_intermediate_dim=2 * width,
        vocabulary_size=vocabulary_size, max_sequence_length=SEQUENCE_LENGTH,
        text_num_layers=2, text_num_heads=4, text_hidden_dim=width,
        text_intermediate_dim=2 * width, eos_token_id=eos_token_id, projection_dim=width)


def same_class_recall(similarities, query_labels, candidate_labels):
    """Share of queries whose most similar candidate has the query's label."""
    return float(np.mean(candidate_labels[similarities.argmax(1)] == query_labels))


def save_figure(path, similarities, labels, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 7))
    image = ax.imshow(similarities, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45)
    starts = [int(np.argmax(labels == k)) for k in range(len(names)) if np.any(labels == k)]
    ax.set_yticks(starts, [names[labels[s]] for s in starts])
    ax.set_xlabel("class prompt (mean of the zero-shot templates)")
    ax.set_ylabel("held-out test image, sorted by its true digit")
    ax.set_title("cosine similarity, image vs class prompt")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    os.makedirs(args.output, exist_ok=True)
    guide_cli.set_random_seed(args.seed)
    data = load_digits(image_size=16, channels=1)
    names = data["class_names"]
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    if args.train_images:
        x_train, y_train = x_train[:args.train_images], y_train[:args.train_images]
    if args.test_images:
        x_test, y_test = x_test[:args.test_images], y_test[:args.test_images]
    # Standardized pixels: with [0, 1] digits (mostly 0) the image tower's [CLS] states
    # start nearly equal for every image and the contrastive loss stalls at log(batch).
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    rng = np.random.RandomState(args.seed)
    # The tokenizer learns from every wording (training captions and prompts alike):
    # zero-shot means no image was ever paired with the unseen wording, not unknown words.
    corpus = [t.format(caption=caption(k), name=n) for k, n in enumerate(names)
              for t in CAPTION_TEMPLATES] + [t.format(n) for n in names
                                             for t in ZERO_SHOT_TEMPLATES]
    tokenizer = Tokenizer.train_bpe(corpus, vocabulary_size=300, special_tokens=SPECIAL_TOKENS,
                                    min_frequency=1)
    eos = tokenizer.token_to_id(SPECIAL_TOKENS[1])
    chance = 1.0 / len(names)
    majority = float(np.mean(y_test == np.bincount(y_train).argmax()))
    print(f"backend {keras.backend.backend()}: {len(x_train)} training and {len(x_test)} test "
          f"digits, vocabulary {tokenizer.vocabulary_size}; chance {chance:.0%}, majority "
          f"class {majority:.1%}")

    clip = build(args, tokenizer.vocabulary_size, eos)
    task = CLIPContrastiveTask(clip)
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    optimizer = keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps),
        weight_decay=0.05, beta_2=0.98, epsilon=1e-6)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "logit_scale"])
    task.compile(optimizer=optimizer)
    losses, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        # Fresh captions (templates) and a fresh order every epoch.
        order = rng.permutation(len(x_train))
        ids = pack_texts(captions_for(y_train[order], rng, names), tokenizer, SEQUENCE_LENGTH)
        history = task.fit({"images": x_train[order], "token_ids": ids},
                           batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        losses.append(float(history.history["loss"][-1]))
        if not args.tiny:
            print(f"epoch {epoch + 1}: loss {losses[-1]:.3f}, image->text recall@1 in batch "
                  f"{history.history['image_to_text_recall_at_1'][-1]:.2f}")
    seconds = time.perf_counter() - start

    class_weights = clip.zero_shot_weights(names, tokenizer, ZERO_SHOT_TEMPLATES)
    test_images = clip.encode_image(x_test, batch_size=256)
    zero_shot = float(np.mean((test_images @ class_weights.T).argmax(1) == y_test))
    unseen = clip.zero_shot_weights(names, tokenizer, ZERO_SHOT_TEMPLATES[1:])
    zero_shot_unseen = float(np.mean((test_images @ unseen.T).argmax(1) == y_test))

    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000).fit(clip.encode_image(x_train, batch_size=256),
                                                  y_train)
    linear_probe = float(probe.score(test_images, y_test))

    test_texts = clip.encode_text(pack_texts(captions_for(y_test, rng, names), tokenizer,
                                             SEQUENCE_LENGTH))
    pair_similarities = test_images @ test_texts.T
    image_to_text = same_class_recall(pair_similarities, y_test, y_test)
    text_to_image = same_class_recall(pair_similarities.T, y_test, y_test)
    retrieval_chance = float(np.mean(np.bincount(y_test)[y_test] / len(y_test)))

    print(f"{clip.count_params():,} parameters, {seconds:.0f}s of training; on held-out digits:"
          f"\n  zero-shot accuracy {zero_shot:.1%} (unseen prompt alone {zero_shot_unseen:.1%};"
          f" chance {chance:.0%})\n  linear probe on the same image features "
          f"{linear_probe:.1%}\n  retrieval recall@1 image->text {image_to_text:.1%}, "
          f"text->image {text_to_image:.1%} (chance {retrieval_chance:.1%})")

    order = np.argsort(y_test, kind="stable")
    figure = os.path.join(args.output, "clip_digits.png")
    save_figure(figure, test_images[order] @ class_weights.T, y_test[order], names)
    print(f"saved {figure}")
    summary = {
        "command": ["guides/clip_digits.py", *(sys.argv[1:] if argv is None else argv)],
        "backend": keras.backend.backend(), "arguments": vars(args),
        "parameters": int(clip.count_params()), "train_seconds": seconds,
        "train_loss": losses, "logit_scale": clip.logit_scale,
        "zero_shot_accuracy": zero_shot, "zero_shot_accuracy_unseen_prompt": zero_shot_unseen,
        "chance_accuracy": chance, "majority_class_accuracy": majority,
        "linear_probe_accuracy": linear_probe,
        "image_to_text_recall_at_1": image_to_text, "text_to_image_recall_at_1": text_to_image,
        "retrieval_chance": retrieval_chance,
        "zero_shot_templates": list(ZERO_SHOT_TEMPLATES),
        "caption_templates": list(CAPTION_TEMPLATES), "figure": figure,
    }
    guide_cli.write_json(args.output_json or os.path.join(args.output, "clip_digits.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
