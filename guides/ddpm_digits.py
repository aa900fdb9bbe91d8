"""Train an unconditional and a class-conditioned diffusion model on digits with `model.fit`.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/ddpm_digits.py     # 8x8 digits, UNet denoisers
    python guides/ddpm_digits.py --denoiser dit        # a DiT instead of the UNet
    python guides/ddpm_digits.py --tiny                # a short smoke run

The embedded digits (scikit-learn's 1,797 8x8 images, no download) train two
`DiffusionModel`s: an unconditional one and a class-conditioned one with classifier-free
guidance (labels dropped to a null class in 10% of training rows). Both sample with DDIM.
Instead of eyeballing, the guide measures the samples with a small CNN trained on the real
training digits:

- class accuracy: the share of conditional samples the classifier assigns to the class
  they were prompted with (chance: 10%), at each of `--guidance-scales` (1: none);
- a Frechet distance on the classifier's penultimate features (FID's formula, on a digit
  classifier instead of Inception) against held-out real digits, for each model's samples,
  next to the same distance for a trivial baseline (Gaussian noise, blurred, with the real
  digits' mean and spread) and for real training digits against the held-out ones.

It writes `<output>/ddpm_digits.json` and PNG grids of samples
(`ddpm_digits_conditional_<scale>.png`: one row per class; `ddpm_digits_unconditional.png`).
"""

import os
import sys
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.models.diffusion import DiffusionModel, DiT, UNet2D

import guide_cli

# `--tiny`: about a minute, and still enough training to beat the noise baseline's
# Frechet distance and chance accuracy (see tests/test_guide_ddpm.py).
TINY = dict(epochs=12, samples_per_class=10, width=16, num_steps=20, classifier_epochs=8,
            guidance_scales="1,2")


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--output", default="out", help="folder for the grids and numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/ddpm_digits.json)")
    parser.add_argument("--denoiser", default="unet", choices=("unet", "dit"),
                        help="the network: a small UNet2D or a DiT on 2x2 patches")
    positive = guide_cli.positive_int
    parser.add_argument("--image-size", type=int, default=8, choices=(8, 16),
                        help="digits are 8x8; 16 upsamples them (bilinear)")
    parser.add_argument("--epochs", type=positive, default=60,
                        help="training epochs of each diffusion model")
    parser.add_argument("--batch-size", type=positive, default=64, help="training batch")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=2e-3,
                        help="AdamW (no weight decay)")
    parser.add_argument("--width", type=positive, default=32,
                        help="channels of the UNet's first level (the second has twice as "
                        "many); the DiT's hidden size is twice it")
    parser.add_argument("--num-train-timesteps", type=positive, default=1000,
                        help="diffusion steps T of training (cosine schedule)")
    parser.add_argument("--num-steps", type=positive, default=50, help="DDIM sampling steps")
    parser.add_argument("--guidance-scales", default="1,1.5,3",
                        help="comma list of classifier-free guidance scales (>= 0) to sample "
                        "the conditional model at; 1 is no guidance")
    parser.add_argument("--samples-per-class", type=positive, default=30,
                        help="conditional samples per digit (the unconditional model draws "
                        "as many in all)")
    parser.add_argument("--ema-decay", type=guide_cli.fraction, default=0.995,
                        help="EMA of the weights used for sampling (0: none)")
    parser.add_argument("--classifier-epochs", type=positive, default=15,
                        help="epochs of the digit classifier that measures the samples")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, training noise and sampling")
    args = guide_cli.parse(parser, argv, TINY)
    try:
        args.guidance_scales = [float(v) for v in args.guidance_scales.split(",") if v.strip()]
    except ValueError:
        parser.error(f"argument --guidance-scales: numbers separated by commas, got "
                     f"{args.guidance_scales!r}")
    if not args.guidance_scales or min(args.guidance_scales) < 0:
        parser.error(f"argument --guidance-scales: numbers >= 0, got {args.guidance_scales}")
    if args.num_steps > args.num_train_timesteps:
        parser.error(f"argument --num-steps: must be at most --num-train-timesteps "
                     f"({args.num_train_timesteps}), got {args.num_steps}")
    return args


def build_denoiser(args, num_classes):
    """A small denoiser; `num_classes` includes the null class (None: unconditional)."""
    if args.denoiser == "dit":
        return DiT(image_size=args.image_size, patch_size=2, in_channels=1,
                   hidden_dim=2 * args.width, num_layers=4, num_heads=4,
                   num_classes=num_classes, frequency_dim=64)
    return UNet2D(in_channels=1, out_channels=1, block_out_channels=(args.width, 2 * args.width),
                  attention_levels=(False, True), layers_per_block=1,
                  norm_num_groups=8, attention_head_dim=8, num_classes=num_classes)


def build_classifier(image_size, seed):
    """A small CNN; its 64-wide penultimate layer gives the Frechet features."""
    initializer = keras.initializers.GlorotUniform(seed)
    inputs = keras.Input((image_size, image_size, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                            kernel_initializer=initializer)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", strides=2, activation="relu",
                            kernel_initializer=initializer)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu",
                            kernel_initializer=initializer)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(64, activation="relu", name="features",
                                  kernel_initializer=initializer)(x)
    logits = keras.layers.Dense(10, name="logits", kernel_initializer=initializer)(features)
    classifier = keras.Model(inputs, logits)
    classifier.compile(keras.optimizers.Adam(2e-3),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    return classifier, keras.Model(inputs, features)


def frechet_distance(features_a, features_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets."""
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def blurred_noise(count, reference, seed):
    """Gaussian noise blurred by a 3x3 box, rescaled to the reference images' mean and
    standard deviation and clipped to [0, 1]: images with the data's statistics, no digit."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count,) + reference.shape[1:]).astype(np.float32)
    padded = np.pad(noise, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = reference.shape[1:3]
    blurred = sum(padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)) / 9
    blurred = (blurred - blurred.mean()) / blurred.std()
    return np.clip(blurred * reference.std() + reference.mean(), 0, 1).astype(np.float32)


def save_grid(path, images, columns):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(images) // columns)
    size = images.shape[1]
    grid = np.ones((rows * (size + 1) + 1, columns * (size + 1) + 1), np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = 1 + row * (size + 1), 1 + column * (size + 1)
        grid[top:top + size, left:left + size] = image[..., 0]
    plt.imsave(path, grid, cmap="gray", vmin=0, vmax=1)


def train_diffusion(args, x, y, conditional):
    model = DiffusionModel(
        build_denoiser(args, 11 if conditional else None), (args.image_size,) * 2 + (1,),
        num_classes=10 if conditional else None, num_train_timesteps=args.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2", condition_dropout=0.1,
        ema_decay=args.ema_decay or None, learning_rate=args.learning_rate, seed=args.seed)
    start = time.perf_counter()
    history = model.fit(x, y if conditional else None, batch_size=args.batch_size,
                        epochs=args.epochs, shuffle=True, verbose=0 if args.tiny else 2)
    seconds = time.perf_counter() - start
    losses = [float(v) for v in history.history["loss"]]
    kind = "conditional" if conditional else "unconditional"
    print(f"{kind}: {model.denoiser.count_params():,} parameters, {seconds:.0f}s of training, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return model, {"train_loss": losses, "seconds": seconds,
                   "parameters": int(model.denoiser.count_params())}


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    os.makedirs(args.output, exist_ok=True)
    guide_cli.set_random_seed(args.seed)
    data = kbm.data.load_digits(image_size=None if args.image_size == 8 else args.image_size)
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    print(f"backend {keras.backend.backend()}: {len(x_train)} training and {len(x_test)} "
          f"held-out digits of {x_train.shape[1:]}")

    classifier, featurizer = build_classifier(args.image_size, args.seed)
    classifier.fit(x_train, y_train, batch_size=64, epochs=args.classifier_epochs, verbose=0)
    _, classifier_accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    print(f"classifier: {classifier_accuracy:.1%} on the held-out real digits")

    def features(images):
        return np.asarray(featurizer.predict(images, batch_size=256, verbose=0))

    def predicted(images):
        return np.asarray(classifier.predict(images, batch_size=256, verbose=0)).argmax(-1)

    test_features = features(x_test)
    count = 10 * args.samples_per_class
    rng = np.random.default_rng(args.seed)
    real_rows = rng.choice(len(x_train), size=min(count, len(x_train)), replace=False)
    noise = blurred_noise(count, x_train, args.seed)
    baselines = {
        "real_train_vs_held_out": frechet_distance(features(x_train[real_rows]), test_features),
        "blurred_noise_vs_held_out": frechet_distance(features(noise), test_features),
    }
    print("Frechet distance to the held-out digits: real training digits "
          f"{baselines['real_train_vs_held_out']:.2f}, blurred noise "
          f"{baselines['blurred_noise_vs_held_out']:.2f}")

    results = {}
    unconditional, results["unconditional"] = train_diffusion(args, x_train, y_train, False)
    start = time.perf_counter()
    samples = unconditional.generate(num_images=count, num_steps=args.num_steps,
                                     seed=args.seed)
    results["unconditional"]["sampling_seconds"] = time.perf_counter() - start
    results["unconditional"]["frechet_distance"] = frechet_distance(features(samples),
                                                                    test_features)
    counts = np.bincount(predicted(samples), minlength=10)
    results["unconditional"]["predicted_class_shares"] = (counts / count).tolist()
    save_grid(os.path.join(args.output, "ddpm_digits_unconditional.png"), samples[:100], 10)

    conditional, results["conditional"] = train_diffusion(args, x_train, y_train, True)
    labels = np.repeat(np.arange(10), args.samples_per_class)
    results["conditional"]["guidance"] = []
    figures = [os.path.join(args.output, "ddpm_digits_unconditional.png")]
    for scale in args.guidance_scales:
        start = time.perf_counter()
        samples = conditional.generate(labels, num_steps=args.num_steps, guidance_scale=scale,
                                       seed=args.seed)
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(predicted(samples) == labels))
        distance = frechet_distance(features(samples), test_features)
        results["conditional"]["guidance"].append(
            {"guidance_scale": scale, "class_accuracy": accuracy,
             "frechet_distance": distance, "sampling_seconds": seconds})
        print(f"conditional, guidance {scale:g}: class accuracy {accuracy:.1%} (chance 10%), "
              f"Frechet distance {distance:.2f}")
        # One row per class, up to 10 samples each.
        per_class = min(args.samples_per_class, 10)
        rows = np.concatenate([np.arange(c * args.samples_per_class,
                                         c * args.samples_per_class + per_class)
                               for c in range(10)])
        figures.append(os.path.join(args.output, f"ddpm_digits_conditional_{scale:g}.png"))
        save_grid(figures[-1], samples[rows], per_class)
    print(f"unconditional: Frechet distance {results['unconditional']['frechet_distance']:.2f}")

    summary = {"command": ["guides/ddpm_digits.py", *(sys.argv[1:] if argv is None else argv)],
               "backend": keras.backend.backend(), "arguments": vars(args),
               "classifier_test_accuracy": float(classifier_accuracy), "chance_accuracy": 0.1,
               "samples_per_measure": count, "frechet_baselines": baselines,
               "models": results,
               "figures": figures}
    guide_cli.write_json(args.output_json or os.path.join(args.output, "ddpm_digits.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
