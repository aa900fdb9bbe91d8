"""Train diffusion models on digits with `model.fit` and measure their samples.

Runs on any backend on 2 CPU cores:

    KERAS_BACKEND=jax python guides/ddpm_digits.py      # the default runs
    python guides/ddpm_digits.py --runs latent          # the caption-conditioned latent model
    python guides/ddpm_digits.py --runs class,dit       # the class-conditioned UNet and DiT
    python guides/ddpm_digits.py --tiny                 # a short smoke run

The embedded digits (scikit-learn's 1,797 8x8 images, no download) train, as `--runs`
picks (a comma list, default `unconditional,class,latent`):

- `unconditional`: a `DiffusionModel` over a small `UNet2D` in pixel space;
- `class`: the same, class-conditioned, with classifier-free guidance (labels dropped to a
  null class in 10% of training rows);
- `latent`: Stable Diffusion in miniature, conditioned on captions. A small
  `AutoencoderKL` is fitted to the digits first (reconstruction plus a small KL term, the
  latent scale then set so that latents have unit variance, as SD's 0.18215 was chosen);
  `LatentTextToImage` then trains a `UNet2DCondition` on its 4x4 latents, cross-attending
  to our `CLIPTextEncoder` (trained with the UNet from random init: no pretrained CLIP
  here) over captions drawn fresh every epoch from a few templates ("a handwritten digit
  seven", "a picture of the number seven", ...), 10% of them replaced by the empty prompt
  for guidance; samples come from caption prompts;
- `dit`: the `class` run with a `DiT` (adaLN-zero transformer on 2x2 patches) as denoiser.

All sample with DDIM. Instead of eyeballing, the guide measures the samples with a small
CNN trained on the real training digits:

- class accuracy: the share of conditional samples the classifier assigns to the class
  they were prompted with (a label, or a caption naming it; chance: 10%), at each of
  `--guidance-scales` (1: none);
- a Frechet distance on the classifier's penultimate features (FID's formula, on a digit
  classifier instead of Inception) against held-out real digits, for each model's samples,
  next to the same distance for a trivial baseline (Gaussian noise, blurred, with the real
  digits' mean and spread) and for real training digits against the held-out ones; the
  latent run also reports both numbers for the autoencoder's reconstructions of the
  held-out digits, the best its decoder allows.

It writes `<output>/ddpm_digits.json` and PNG grids of samples
(`ddpm_digits_<run>_<scale>.png`: one row per class; `ddpm_digits_unconditional.png`).
"""

import os
import sys
import time

import numpy as np

import keras
from keras import ops

import keras_bigmodels as kbm
from keras_bigmodels.data import DIGIT_NAMES, caption
from keras_bigmodels.models.clip import CLIPTextEncoder, pack_texts
from keras_bigmodels.models.diffusion import (AutoencoderKL, DiffusionModel, DiT,
                                              LatentTextToImage, UNet2D, UNet2DCondition)
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli

RUNS = ("unconditional", "class", "latent", "dit")
# Training captions of the latent run: the data module's own caption and rewordings; the
# prompts of its samples cycle through the same templates.
CAPTION_TEMPLATES = ("{caption}", "a handwritten {name}", "a picture of the number {name}",
                     "the digit {name}", "a {name} written by hand")
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# Start, the longest caption (6 words, one token each), end.
SEQUENCE_LENGTH = 8

# `--tiny`: small sizes for every picked run. The pixel runs still train enough to beat the
# noise baseline's Frechet distance and chance accuracy; the latent run only shows that
# its autoencoder and diffusion losses fall (see tests/test_guide_ddpm.py).
TINY = dict(epochs=12, samples_per_class=10, width=16, num_steps=20, classifier_epochs=8,
            guidance_scales="1,2", autoencoder_epochs=8, latent_epochs=12)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--output", default="out", help="folder for the grids and numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/ddpm_digits.json)")
    parser.add_argument("--runs", default="unconditional,class,latent",
                        help="comma list of the models to train and measure, from "
                        + ", ".join(RUNS))
    positive = guide_cli.positive_int
    parser.add_argument("--image-size", type=int, default=8, choices=(8, 16),
                        help="digits are 8x8; 16 upsamples them (bilinear)")
    parser.add_argument("--epochs", type=positive, default=60,
                        help="training epochs of each pixel-space model")
    parser.add_argument("--batch-size", type=positive, default=64, help="training batch")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=2e-3,
                        help="AdamW (no weight decay)")
    parser.add_argument("--width", type=positive, default=32,
                        help="channels of the UNets' first level (the second has twice as "
                        "many); the DiT's hidden size is twice it; the text encoder's width")
    parser.add_argument("--num-train-timesteps", type=positive, default=1000,
                        help="diffusion steps T of training")
    parser.add_argument("--num-steps", type=positive, default=50, help="DDIM sampling steps")
    parser.add_argument("--guidance-scales", default="1,1.5,3",
                        help="comma list of classifier-free guidance scales (>= 0) to sample "
                        "the conditional models at; 1 is no guidance")
    parser.add_argument("--samples-per-class", type=positive, default=30,
                        help="conditional samples per digit (the unconditional model draws "
                        "as many in all)")
    parser.add_argument("--ema-decay", type=guide_cli.fraction, default=0.995,
                        help="EMA of the weights used for sampling (0: none)")
    parser.add_argument("--autoencoder-epochs", type=positive, default=20,
                        help="latent run: epochs of the autoencoder, before the diffusion")
    parser.add_argument("--latent-channels", type=positive, default=4,
                        help="latent run: channels of the 4x4 latents (8x8 digits)")
    parser.add_argument("--kl-weight", type=guide_cli.positive_float, default=1e-3,
                        help="latent run: weight of the autoencoder's KL term against the "
                        "summed squared reconstruction error")
    parser.add_argument("--latent-epochs", type=positive, default=50,
                        help="latent run: epochs of the latent diffusion model")
    parser.add_argument("--classifier-epochs", type=positive, default=15,
                        help="epochs of the digit classifier that measures the samples")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="initialization, training noise, captions and sampling")
    args = guide_cli.parse(parser, argv, TINY)
    args.runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = [run for run in args.runs if run not in RUNS]
    if not args.runs or unknown or len(set(args.runs)) != len(args.runs):
        parser.error(f"argument --runs: a comma list of distinct runs from {', '.join(RUNS)}; "
                     f"got {','.join(args.runs)!r}")
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


def build_denoiser(args, num_classes, kind="unet"):
    """A small pixel-space denoiser; `num_classes` includes the null class (None:
    unconditional)."""
    if kind == "dit":
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


def train_diffusion(args, x, y, run):
    """A pixel-space `DiffusionModel` fitted for the `unconditional`, `class` or `dit` run."""
    conditional = run != "unconditional"
    model = DiffusionModel(
        build_denoiser(args, 11 if conditional else None, "dit" if run == "dit" else "unet"),
        (args.image_size,) * 2 + (1,), num_classes=10 if conditional else None,
        num_train_timesteps=args.num_train_timesteps, beta_schedule="squaredcos_cap_v2",
        condition_dropout=0.1, ema_decay=args.ema_decay or None,
        learning_rate=args.learning_rate, seed=args.seed)
    start = time.perf_counter()
    history = model.fit(x, y if conditional else None, batch_size=args.batch_size,
                        epochs=args.epochs, shuffle=True, verbose=0 if args.tiny else 2)
    seconds = time.perf_counter() - start
    losses = [float(v) for v in history.history["loss"]]
    print(f"{run}: {model.denoiser.count_params():,} parameters, {seconds:.0f}s of training, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return model, {"train_loss": losses, "seconds": seconds,
                   "parameters": int(model.denoiser.count_params())}


class AutoencoderTrainer(keras.Model):
    """Fits an `AutoencoderKL` to images in [0, 1]: squared error plus a KL term.

    SD's autoencoder adds perceptual and adversarial losses for sharp photos; 8x8 digits
    need neither. The loss per pixel is the mean squared error plus `kl_weight` times the
    KL divergence of the posterior to N(0, 1) per pixel, a beta-VAE against the summed
    squared error: a small weight keeps the latents near the origin without blurring.

    Args:
        vae: the `AutoencoderKL` to fit (its weights change in place).
        kl_weight: weight of the KL term.
        seed: the posterior samples' seed.

    Example:
    >>> trainer = AutoencoderTrainer(vae, kl_weight=1e-3, seed=0)
    >>> trainer.compile(keras.optimizers.Adam(1e-3))
    >>> trainer.fit(images, epochs=10, batch_size=64)
    """

    def __init__(self, vae, kl_weight, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae
        self.kl_weight = float(kl_weight)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, images, training=False):
        posterior = self.vae.encode(ops.cast(images, "float32") * 2.0 - 1.0, training=training)
        # Training decodes a posterior sample (the reparameterization trick), as SD's VAE.
        latents = posterior.sample(self.seed_generator) if training else posterior.mode()
        reconstruction = (self.vae.decode(latents, training=training) + 1.0) / 2.0
        return reconstruction, posterior.kl()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction, kl = y_pred
        pixels = float(np.prod(reconstruction.shape[1:]))
        return (ops.mean(ops.square(reconstruction - ops.cast(x, "float32")))
                + self.kl_weight * ops.mean(kl) / pixels)


def fit_autoencoder(args, x):
    """A small `AutoencoderKL` (8x8x1 -> 4x4xlatent_channels) fitted to the digits, its
    `scaling_factor` set to one over the standard deviation of the training latents."""
    vae = AutoencoderKL(in_channels=1, out_channels=1,
                        block_out_channels=(args.width, 2 * args.width), layers_per_block=1,
                        latent_channels=args.latent_channels, norm_num_groups=8,
                        mid_block_attention=False)
    trainer = AutoencoderTrainer(vae, args.kl_weight, seed=args.seed)
    trainer.compile(keras.optimizers.Adam(args.learning_rate))
    start = time.perf_counter()
    history = trainer.fit(x, batch_size=args.batch_size, epochs=args.autoencoder_epochs,
                          shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    # SD's 0.18215 is one over the standard deviation of its autoencoder's latents: the
    # noise schedule assumes data of about unit variance.
    means = ops.convert_to_numpy(vae.encode(ops.convert_to_tensor(x * 2.0 - 1.0)).mean)
    vae.scaling_factor = float(1.0 / means.std())
    losses = [float(v) for v in history.history["loss"]]
    print(f"autoencoder: {vae.count_params():,} parameters, {seconds:.0f}s of training, loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f}, latent scale {vae.scaling_factor:.3f}")
    return vae, {"train_loss": losses, "seconds": seconds,
                 "parameters": int(vae.count_params()),
                 "scaling_factor": vae.scaling_factor}


def reconstruct(vae, images):
    """The autoencoder's reconstructions (posterior means decoded) of images in [0, 1]."""
    latents = vae.encode(ops.convert_to_tensor(images * 2.0 - 1.0)).mode()
    return np.clip((ops.convert_to_numpy(vae.decode(latents)) + 1.0) / 2.0, 0, 1)


def caption_tokenizer():
    """A byte-level BPE tokenizer over every caption the templates make, with room for
    every word to become one token (324 ids in all)."""
    corpus = [template.format(caption=caption(label), name=name)
              for label, name in enumerate(DIGIT_NAMES) for template in CAPTION_TEMPLATES]
    return Tokenizer.train_bpe(corpus, vocabulary_size=400, special_tokens=SPECIAL_TOKENS,
                               min_frequency=1)


def captions_for(labels, templates):
    """One caption per label, the i-th from template `templates[i]`."""
    return [CAPTION_TEMPLATES[t].format(caption=caption(y), name=DIGIT_NAMES[y])
            for t, y in zip(templates, labels)]


def train_latent(args, x, y, vae, tokenizer):
    """`LatentTextToImage` over the fitted autoencoder, trained on captioned digits."""
    width = args.width
    text_encoder = CLIPTextEncoder(
        vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=SEQUENCE_LENGTH,
        num_layers=2, num_heads=4, hidden_dim=width, intermediate_dim=2 * width,
        eos_token_id=tokenizer.token_to_id(SPECIAL_TOKENS[1]))
    unet = UNet2DCondition(in_channels=args.latent_channels, out_channels=args.latent_channels,
                           block_out_channels=(width, 2 * width),
                           cross_attention_levels=(True, True), layers_per_block=1,
                           num_heads=4, cross_attention_dim=width, norm_num_groups=8)
    model = LatentTextToImage(vae, unet, text_encoder, image_shape=x.shape[1:],
                              tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH,
                              train_text_encoder=True,
                              num_train_timesteps=args.num_train_timesteps,
                              condition_dropout=0.1, ema_decay=args.ema_decay or None,
                              learning_rate=args.learning_rate, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    losses, start = [], time.perf_counter()
    for epoch in range(args.latent_epochs):
        # Fresh wordings and a fresh order every epoch.
        order = rng.permutation(len(x))
        token_ids = pack_texts(
            captions_for(y[order], rng.integers(len(CAPTION_TEMPLATES), size=len(x))),
            tokenizer, SEQUENCE_LENGTH)
        history = model.fit((x[order], token_ids), batch_size=args.batch_size, epochs=1,
                            shuffle=False, verbose=0)
        losses.append(float(history.history["loss"][-1]))
        if not args.tiny and (epoch + 1) % 10 == 0:
            print(f"latent epoch {epoch + 1}: loss {losses[-1]:.3f}")
    seconds = time.perf_counter() - start
    parameters = int(unet.count_params() + text_encoder.count_params())
    print(f"latent: {unet.count_params():,} UNet and {text_encoder.count_params():,} text "
          f"encoder parameters, {seconds:.0f}s of training, loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}")
    return model, {"train_loss": losses, "seconds": seconds, "parameters": parameters,
                   "unet_parameters": int(unet.count_params()),
                   "text_encoder_parameters": int(text_encoder.count_params())}


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
          f"held-out digits of {x_train.shape[1:]}; runs {', '.join(args.runs)}")

    classifier, featurizer = build_classifier(args.image_size, args.seed)
    classifier.fit(x_train, y_train, batch_size=64, epochs=args.classifier_epochs, verbose=0)
    _, classifier_accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    print(f"classifier: {classifier_accuracy:.1%} on the held-out real digits")

    def features(images):
        return np.asarray(featurizer.predict(images, batch_size=256, verbose=0))

    def predicted(images):
        return np.asarray(classifier.predict(images, batch_size=256, verbose=0)).argmax(-1)

    test_features = features(x_test)

    def measure(images, labels):
        """Class accuracy against the prompted labels and the Frechet distance."""
        return {"class_accuracy": float(np.mean(predicted(images) == labels)),
                "frechet_distance": frechet_distance(features(images), test_features)}

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

    labels = np.repeat(np.arange(10), args.samples_per_class)
    # One row per class in the grids, up to 10 samples each.
    per_class = min(args.samples_per_class, 10)
    grid_rows = np.concatenate([np.arange(c * args.samples_per_class,
                                          c * args.samples_per_class + per_class)
                                for c in range(10)])

    def sample_at_each_scale(run, generate):
        """Samples of `generate(guidance_scale)`, measured and saved at every scale."""
        entries = []
        for scale in args.guidance_scales:
            start = time.perf_counter()
            samples = generate(scale)
            seconds = time.perf_counter() - start
            entry = {"guidance_scale": scale, **measure(samples, labels),
                     "sampling_seconds": seconds}
            entries.append(entry)
            print(f"{run}, guidance {scale:g}: class accuracy {entry['class_accuracy']:.1%} "
                  f"(chance 10%), Frechet distance {entry['frechet_distance']:.2f}")
            figures.append(os.path.join(args.output, f"ddpm_digits_{run}_{scale:g}.png"))
            save_grid(figures[-1], samples[grid_rows], per_class)
        return entries

    results, figures = {}, []
    for run in args.runs:
        if run == "unconditional":
            model, results[run] = train_diffusion(args, x_train, y_train, run)
            start = time.perf_counter()
            samples = model.generate(num_images=count, num_steps=args.num_steps,
                                     seed=args.seed)
            results[run]["sampling_seconds"] = time.perf_counter() - start
            results[run]["frechet_distance"] = frechet_distance(features(samples),
                                                                test_features)
            shares = np.bincount(predicted(samples), minlength=10) / count
            results[run]["predicted_class_shares"] = shares.tolist()
            print(f"unconditional: Frechet distance {results[run]['frechet_distance']:.2f}")
            figures.append(os.path.join(args.output, "ddpm_digits_unconditional.png"))
            save_grid(figures[-1], samples[:100], 10)
        elif run in ("class", "dit"):
            model, results[run] = train_diffusion(args, x_train, y_train, run)
            results[run]["guidance"] = sample_at_each_scale(
                run, lambda scale: model.generate(labels, num_steps=args.num_steps,
                                                  guidance_scale=scale, seed=args.seed))
        else:
            vae, autoencoder = fit_autoencoder(args, x_train)
            autoencoder["held_out_reconstructions"] = measure(reconstruct(vae, x_test), y_test)
            print("autoencoder reconstructions of the held-out digits: class accuracy "
                  f"{autoencoder['held_out_reconstructions']['class_accuracy']:.1%}, Frechet "
                  f"distance {autoencoder['held_out_reconstructions']['frechet_distance']:.2f}")
            tokenizer = caption_tokenizer()
            model, results[run] = train_latent(args, x_train, y_train, vae, tokenizer)
            results[run]["autoencoder"] = autoencoder
            # Each class is prompted with every template in turn.
            prompts = captions_for(labels, np.arange(count) % len(CAPTION_TEMPLATES))
            results[run]["caption_templates"] = list(CAPTION_TEMPLATES)
            results[run]["guidance"] = sample_at_each_scale(
                run, lambda scale: model.generate(prompts, num_steps=args.num_steps,
                                                  guidance_scale=scale, seed=args.seed))

    summary = {"command": ["guides/ddpm_digits.py", *(sys.argv[1:] if argv is None else argv)],
               "backend": keras.backend.backend(), "arguments": vars(args),
               "classifier_test_accuracy": float(classifier_accuracy), "chance_accuracy": 0.1,
               "samples_per_measure": count, "frechet_baselines": baselines,
               "models": results, "figures": figures}
    guide_cli.write_json(args.output_json or os.path.join(args.output, "ddpm_digits.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
