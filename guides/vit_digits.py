"""Train a small ViT and a small Swin from scratch on handwritten digits with `model.fit`.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/vit_digits.py                  # embedded 8x8 digits
    python guides/vit_digits.py --data my_images/ --image-size 32  # your class folders
    python guides/vit_digits.py --tiny                             # a seconds-long smoke run

The digits (scikit-learn's 1,797 8x8 images, no download) are upsampled to 16x16.
Random translations/rotations/zooms (Keras preprocessing layers) are applied to every
training batch in a `keras.utils.PyDataset`, on any backend and without TensorFlow. It
reports test accuracy for both models next to the majority-class baseline, writes the
numbers to `<output>/vit_digits.json`, and saves `<output>/vit_digits.png`: test images
with both models' predictions, the ViT's [CLS] -> patch attention in its last layer and
the attention each patch receives in Swin's last stage (the layer is named on the figure).
"""

import os
import sys
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.models import ImageClassifier, SwinBackbone, ViTBackbone
from keras_bigmodels.preprocessing import image_preprocessor

import guide_cli

MODELS = ("vit", "swin")

# `--tiny`: seconds, and still enough epochs to beat the majority class (see the test).
TINY = dict(epochs=8, train_images=512, test_images=128, width=16, batch_size=32,
            learning_rate=3e-3, no_augment=True)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--data", help="a folder of class sub-folders of images; none: the "
                        "embedded digits")
    parser.add_argument("--output", default="out", help="folder for the figure and numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/vit_digits.json)")
    parser.add_argument("--models", default="vit,swin", help="comma list of vit, swin")
    positive = guide_cli.positive_int
    parser.add_argument("--image-size", type=positive, default=16,
                        help="a multiple of 8 (ViT: 4x4 patches; Swin: 2 stages of 4x4 "
                        "windows)")
    parser.add_argument("--epochs", type=positive, default=40, help="training epochs")
    parser.add_argument("--batch-size", type=positive, default=64, help="training batch")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=1e-3,
                        help="AdamW, cosine decay to 0")
    parser.add_argument("--width", type=positive, default=64,
                        help="ViT hidden size; Swin's first stage is half of it")
    parser.add_argument("--train-images", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N training images (0: all)")
    parser.add_argument("--test-images", type=guide_cli.non_negative_int, default=0,
                        help="use only the first N test images (0: all)")
    parser.add_argument("--no-augment", action="store_true",
                        help="train without random translations, rotations and zooms")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, shuffling and augmentation")
    args = guide_cli.parse(parser, argv, TINY)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"argument --models: entries must be among {', '.join(MODELS)}; "
                     f"got {unknown or 'nothing'}")
    if args.image_size % 8:
        parser.error(f"argument --image-size: must be a multiple of 8, got {args.image_size}")
    if args.width % 16:
        parser.error(f"argument --width: must be a multiple of 16, got {args.width}")
    return args


def load_data(args):
    if args.data:
        images, labels, names = kbm.data.load_image_folder(args.data, args.image_size,
                                                           channels=1)
        order = np.random.RandomState(0).permutation(len(labels))
        test = order[: len(order) // 5]
        train = order[len(order) // 5:]
        return images[train], labels[train], images[test], labels[test], names
    data = kbm.data.load_digits(image_size=args.image_size)
    return (data["x_train"], data["y_train"], data["x_test"], data["y_test"],
            data["class_names"])


def build(kind, args, num_classes):
    size, width = args.image_size, args.width
    if kind == "vit":
        backbone = ViTBackbone(image_size=size, patch_size=size // 4, num_layers=4,
                               num_heads=4, hidden_dim=width, intermediate_dim=2 * width,
                               num_channels=1, dropout=0.1)
        return ImageClassifier(backbone, num_classes=num_classes)
    window = 4
    backbone = SwinBackbone(image_size=size, patch_size=size // (2 * window),
                            hidden_dim=width // 2, depths=[2, 2], num_heads=[2, 4],
                            window_size=window, num_channels=1, dropout=0.1)
    return ImageClassifier(backbone, num_classes=num_classes)


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled training batches, augmented by Keras preprocessing layers, as numpy."""

    def __init__(self, x, y, batch_size, augment, seed):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.augment = image_preprocessor(augment=True, seed=seed) if augment else None
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        images = self.x[rows]
        if self.augment is not None:
            images = keras.ops.convert_to_numpy(self.augment(images, training=True))
        return images, self.y[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def vit_attention(model, images):
    """[batch, grid, grid] [CLS] -> patch attention of the last layer, mean over heads."""
    scores = keras.ops.convert_to_numpy(model.backbone.attention_scores(images)[-1])
    grid = model.backbone.grid_size
    layer = f"transformer_layer_{model.backbone.num_layers - 1}"
    return scores[:, :, 0, 1:].mean(1).reshape((len(images), *grid)), layer


def swin_attention(model, images):
    """[batch, H, W] attention each position receives in the last stage's first block.

    That block attends within unshifted windows: the mean over heads and queries of each
    window is mapped back to the feature map. Swin has no [CLS] token to look from.
    """
    backbone = model.backbone
    stage = len([l for l in backbone.layers if l.name.endswith("_block_0")]) - 1
    name = f"stage_{stage}_block_0"
    block = backbone.get_layer(name)
    features = keras.Model(backbone.input, block.input)(images)
    _, scores = block(features, return_attention_scores=True)
    received = keras.ops.convert_to_numpy(scores).mean(axis=(1, 2))  # [b*windows, w*w]
    _, height, width, _ = features.shape
    window = int(round(received.shape[-1] ** 0.5))
    maps = received.reshape(len(images), height // window, width // window, window, window)
    return maps.transpose(0, 1, 3, 2, 4).reshape(len(images), height, width), name


def save_figure(path, models, x, y, predictions, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = 8
    maps = {}
    if "vit" in models:
        maps["vit"] = vit_attention(models["vit"], x[:count])
    if "swin" in models:
        maps["swin"] = swin_attention(models["swin"], x[:count])
    rows = 1 + len(maps)
    fig, axes = plt.subplots(rows, count, figsize=(2 * count, 2.3 * rows), squeeze=False)
    extent = (-0.5, x.shape[2] - 0.5, x.shape[1] - 0.5, -0.5)
    for i in range(count):
        axes[0, i].imshow(x[i, ..., 0], cmap="gray")
        wrong = any(predictions[kind][i] != y[i] for kind in predictions)
        guesses = "  ".join(f"{kind} {names[predictions[kind][i]]}" for kind in predictions)
        axes[0, i].set_title(f"{guesses}\ntrue {names[y[i]]}", color="red" if wrong else
                             "green", fontsize=8)
        for row, (attention, _) in enumerate(maps.values(), start=1):
            axes[row, i].imshow(x[i, ..., 0], cmap="gray")
            axes[row, i].imshow(attention[i], cmap="inferno", alpha=0.6, extent=extent)
        for row in range(rows):
            axes[row, i].axis("off")
    labels = {"vit": "ViT {}: [CLS] -> patch attention, mean of heads",
              "swin": "Swin {}: attention each position receives, mean of heads and queries"}
    for row, (kind, (_, layer)) in enumerate(maps.items(), start=1):
        axes[row, 0].set_title(labels[kind].format(layer), fontsize=9, loc="left")
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
    x_train, y_train, x_test, y_test, names = load_data(args)
    if args.train_images:
        x_train, y_train = x_train[:args.train_images], y_train[:args.train_images]
    if args.test_images:
        x_test, y_test = x_test[:args.test_images], y_test[:args.test_images]
    majority = float(np.mean(y_test == np.bincount(y_train).argmax()))
    print(f"backend {keras.backend.backend()}: {len(x_train)} training and {len(x_test)} test "
          f"images of {x_train.shape[1:]}, {len(names)} classes (the majority class scores "
          f"{majority:.1%} on the test images)")

    results, models, predictions = {}, {}, {}
    for kind in args.models:
        model = build(kind, args, len(names))
        batches = AugmentedBatches(x_train, y_train, args.batch_size,
                                   augment=not args.no_augment, seed=args.seed)
        model.compile(optimizer=keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(
                args.learning_rate, decay_steps=max(1, args.epochs * len(batches)), warmup_target=None),
            weight_decay=0.05))
        start = time.perf_counter()
        history = model.fit(batches, epochs=args.epochs, verbose=2 if not args.tiny else 0)
        seconds = time.perf_counter() - start
        # One predict pass gives accuracy, loss and the figure's labels (one compile less
        # than evaluate + predict).
        logits = np.asarray(model.predict(x_test, batch_size=args.batch_size, verbose=0),
                            np.float64)
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        loss = float(-log_probs[np.arange(len(y_test)), y_test].mean())
        accuracy = float((logits.argmax(-1) == y_test).mean())
        predictions[kind] = logits.argmax(-1)
        print(f"{kind}: {model.count_params():,} parameters, {seconds:.0f}s of training, "
              f"test accuracy {accuracy:.1%} (majority class {majority:.1%})")
        results[kind] = {"test_accuracy": accuracy, "test_loss": loss,
                         "train_loss": [float(v) for v in history.history["loss"]],
                         "parameters": int(model.count_params()), "seconds": seconds}
        models[kind] = model

    figure = os.path.join(args.output, "vit_digits.png")
    save_figure(figure, models, x_test, y_test, predictions, names)
    print(f"saved {figure}")
    summary = {"command": ["guides/vit_digits.py", *(sys.argv[1:] if argv is None else argv)],
               "backend": keras.backend.backend(), "arguments": vars(args),
               "majority_class_accuracy": majority, "models": results, "figure": figure}
    guide_cli.write_json(args.output_json or os.path.join(args.output, "vit_digits.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
