"""Train a small ViT and a small Swin from scratch on handwritten digits with `model.fit`.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/vit_digits.py                  # embedded 8x8 digits
    python guides/vit_digits.py --data my_images/ --image-size 32  # your class folders
    python guides/vit_digits.py --tiny                             # a seconds-long smoke run

The digits (scikit-learn's 1,797 8x8 images, no download) are upsampled to 16x16.
Random translations/rotations/zooms are applied in a `tf.data` pipeline with Keras
preprocessing layers (any backend). It reports test accuracy for both models and saves
`<output>/vit_digits.png`: test images with predicted labels, and the ViT's last-layer
attention from [CLS] to the patches.
"""

import argparse
import json
import os
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.layers.image_preprocessing import image_preprocessor
from keras_bigmodels.models import (
    SwinBackbone,
    SwinImageClassifier,
    ViTBackbone,
    ViTImageClassifier,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a folder of class sub-folders of images (default: digits)")
    parser.add_argument("--output", default="out", help="folder for the figure and models")
    parser.add_argument("--models", default="vit,swin", help="comma list of vit, swin")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    return parser.parse_args(argv)


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
    size = args.image_size
    if kind == "vit":
        backbone = ViTBackbone(image_size=size, patch_size=size // 4, num_layers=4, num_heads=4,
                               hidden_dim=64, intermediate_dim=128, num_channels=1,
                               dropout=0.1)
        if args.tiny:
            backbone = ViTBackbone(image_size=size, patch_size=size // 4, num_layers=1,
                                   num_heads=2, hidden_dim=16, intermediate_dim=32,
                                   num_channels=1)
        return ViTImageClassifier(backbone, num_classes=num_classes)
    if kind == "swin":
        window = 4
        backbone = SwinBackbone(image_size=size, patch_size=size // (2 * window),
                                hidden_dim=16 if args.tiny else 32,
                                depths=[2, 2], num_heads=[2, 4], window_size=window,
                                num_channels=1, dropout=0.0 if args.tiny else 0.1)
        return SwinImageClassifier(backbone, num_classes=num_classes)
    raise ValueError(f"`--models` entries must be vit or swin; received {kind!r}.")


def training_data(x, y, args):
    """A tf.data pipeline with augmentation by Keras preprocessing layers."""
    import tensorflow as tf

    augment = image_preprocessor(augment=not args.no_augment, seed=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
    ds = ds.batch(args.batch_size)
    if not args.no_augment:
        ds = ds.map(lambda images, labels: (augment(images, training=True), labels))
    return ds.prefetch(2)


def save_figure(path, vit, x, y, predictions, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = 8
    fig, axes = plt.subplots(2, count, figsize=(2 * count, 4.4))
    scores = None
    if vit is not None:
        scores = keras.ops.convert_to_numpy(vit.attention_scores(x[:count])[-1])
    grid = vit.backbone.grid_size if vit is not None else None
    for i in range(count):
        axes[0, i].imshow(x[i, ..., 0], cmap="gray")
        ok = predictions[i] == y[i]
        axes[0, i].set_title(f"pred {names[predictions[i]]}\ntrue {names[y[i]]}",
                             color="green" if ok else "red", fontsize=9)
        if scores is not None:
            # [CLS] -> patch attention of the last layer, averaged over heads.
            attention = scores[i, :, 0, 1:].mean(0).reshape(grid)
            axes[1, i].imshow(x[i, ..., 0], cmap="gray")
            axes[1, i].imshow(attention, cmap="inferno", alpha=0.6,
                              extent=(-0.5, x.shape[2] - 0.5, x.shape[1] - 0.5, -0.5))
        for row in (0, 1):
            axes[row, i].axis("off")
    axes[1, 0].set_title("ViT [CLS] attention", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.tiny:
        args.epochs = 1
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test, names = load_data(args)
    if args.tiny:
        x_train, y_train, x_test, y_test = x_train[:128], y_train[:128], x_test[:64], y_test[:64]
    print(f"backend {keras.backend.backend()}: {len(x_train)} training and {len(x_test)} test "
          f"images of {x_train.shape[1:]}, {len(names)} classes (chance {1 / len(names):.0%})")

    results, models, predictions = {}, {}, {}
    for kind in args.models.split(","):
        model = build(kind.strip(), args, len(names))
        model.compile(optimizer=keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(
                1e-3, decay_steps=max(1, args.epochs * (len(x_train) // args.batch_size + 1)),
                warmup_target=None),
            weight_decay=0.05))
        start = time.perf_counter()
        history = model.fit(training_data(x_train, y_train, args), epochs=args.epochs,
                            verbose=2 if not args.tiny else 0)
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
              f"test accuracy {accuracy:.1%}")
        results[kind] = {"test_accuracy": float(accuracy), "test_loss": float(loss),
                         "train_loss": [float(v) for v in history.history["loss"]],
                         "parameters": int(model.count_params()), "seconds": seconds}
        models[kind] = model

    shown = "vit" if "vit" in models else next(iter(models))
    figure = os.path.join(args.output, "vit_digits.png")
    save_figure(figure, models.get("vit"), x_test, y_test, predictions[shown], names)
    with open(os.path.join(args.output, "vit_digits.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"saved {figure}")
    return results


if __name__ == "__main__":
    main()
