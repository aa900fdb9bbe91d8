"""Diffusion UNet training and DDIM sampling speed: keras_bigmodels vs diffusers.

Reference config (random init, diffusers `UNet2DModel` layout): images 32x32x3,
block_out_channels (64, 128), 2 residual blocks per level, self-attention at the lower
resolution (16x16) and in the middle block, attention heads of 32, 32 norm groups; linear
beta schedule over 1000 timesteps; epsilon prediction. Training: batch 16, each step draws
fresh noise and timesteps, noises the images, predicts the noise and takes the MSE,
AdamW(2e-4, no weight decay), no EMA, no metrics. Sampling: DDIM, 50 steps, eta 0, clipped
x0, a batch of `--sample-batch` images (8 by default).

    python benchmarks/bench_diffusion.py --backend jax --tuning ours  # or tensorflow / torch
    python benchmarks/bench_diffusion.py --backend jax --rounds 3 --steps 1 --warmup 1

Ours: `UNet2D` inside `DiffusionModel` (`train_on_batch`, `generate(sampler="ddim",
num_steps=50)`) on the Keras backend; diffusers: `UNet2DModel` in a plain torch training
loop and `DDIMPipeline`, always PyTorch eager. Every contender runs in its own process
through `harness.py` (alternating rounds, medians with min-max, JSON with commit, machine
and load). MFU counts the UNet's convolutions, dense layers and attention products
(`unet2d_flops`: 9.3 GFLOP per training image at this config, 3.1 GFLOP per image per
sampling step) against each framework's measured matmul peak. Writes
benchmarks/results/diffusion_<backend>_<tuning>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(image_size=32, channels=3, block_out_channels=[64, 128],
              attention_levels=[False, True], layers_per_block=2, attention_head_dim=32,
              norm_num_groups=32, num_train_timesteps=1000)
BATCH, SAMPLE_BATCH, SAMPLE_STEPS = 16, 8, 50
LEARNING_RATE = 2e-4
CONTENDERS = ("ours", "diffusers")
LABELS = {"ours": "keras_bigmodels", "diffusers": "diffusers UNet2DModel / DDIMPipeline"}


def sample_name(batch, steps):
    """The measure name of a sampling job: "ddim50_b8" (render.py reads it back)."""
    return f"ddim{steps}_b{batch}"


def unet_config(config):
    """The `UNet2D` config dict of the benchmark config (what both sides build)."""
    return dict(in_channels=config["channels"], out_channels=config["channels"],
                block_out_channels=tuple(config["block_out_channels"]),
                attention_levels=tuple(config["attention_levels"]),
                layers_per_block=config["layers_per_block"],
                attention_head_dim=config["attention_head_dim"],
                norm_num_groups=config["norm_num_groups"])


def flops_per_image(config, sample_steps):
    """{measure: FLOPs per image}: a training step, and a whole DDIM sampling call.

    The count is the library's (`unet2d_flops`), imported into this parent process from
    this checkout (the contenders' processes are unaffected).
    """
    if harness.REPOSITORY_ROOT not in sys.path:
        sys.path.insert(1, harness.REPOSITORY_ROOT)
    from keras_bigmodels.models.diffusion.config import unet2d_flops

    unet, size = unet_config(config), config["image_size"]
    return {"train": unet2d_flops(unet, size),
            "sample": sample_steps * unet2d_flops(unet, size, training=False)}


def make_images(config, batch):
    """Training images in [0, 1], [batch, H, W, C] float32 (the same on every side)."""
    import numpy as np

    rng = np.random.default_rng(0)
    size = config["image_size"]
    return rng.random((batch, size, size, config["channels"]), dtype=np.float32)


# ------------------------------------------------------------------------------------
# Setup functions: run inside the contenders' own processes (see harness.py).

def setup_ours(config, batch, sample_batch, sample_steps, train=True):
    import keras
    from keras_bigmodels.models.diffusion import DiffusionModel, UNet2D

    unet = UNet2D(**unet_config(config))
    size = config["image_size"]
    model = DiffusionModel(unet, image_shape=(size, size, config["channels"]),
                           num_train_timesteps=config["num_train_timesteps"],
                           beta_schedule="linear", prediction_type="epsilon", ema_decay=None,
                           clip_sample=True, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.0))
    measures = {}
    if train:
        step = harness.keras_train_step(model, make_images(config, batch), None)
        measures["train"] = harness.Measure(step, batch, "images")

    def sample():
        model.generate(num_images=sample_batch, num_steps=sample_steps, sampler="ddim",
                       eta=0.0, seed=0)
    measures[sample_name(sample_batch, sample_steps)] = harness.Measure(sample, sample_batch,
                                                                         "images")
    return measures, {"parameters": unet.count_params()}


def setup_diffusers(config, batch, sample_batch, sample_steps, train=True):
    import diffusers
    import torch

    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in config["attention_levels"]]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config["attention_levels"])]
    unet = diffusers.UNet2DModel(
        sample_size=config["image_size"], in_channels=config["channels"],
        out_channels=config["channels"], block_out_channels=tuple(config["block_out_channels"]),
        down_block_types=tuple(down), up_block_types=tuple(up),
        layers_per_block=config["layers_per_block"],
        attention_head_dim=config["attention_head_dim"],
        norm_num_groups=config["norm_num_groups"])
    schedule = dict(num_train_timesteps=config["num_train_timesteps"], beta_schedule="linear",
                    beta_start=0.0001, beta_end=0.02, clip_sample=True)
    noise_scheduler = diffusers.DDPMScheduler(**schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    images = torch.tensor(make_images(config, batch).transpose(0, 3, 1, 2)) * 2.0 - 1.0
    generator = torch.Generator().manual_seed(0)

    def train_step():
        # The same work as DiffusionModel.compute_loss: fresh noise and timesteps, the
        # noised images, the denoiser, MSE on the noise.
        unet.train()
        noise = torch.randn(images.shape, generator=generator)
        timesteps = torch.randint(0, config["num_train_timesteps"], (batch,),
                                  generator=generator)
        noisy = noise_scheduler.add_noise(images, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    pipeline = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(**schedule))
    pipeline.set_progress_bar_config(disable=True)

    def sample():
        unet.eval()
        pipeline(batch_size=sample_batch, generator=torch.Generator().manual_seed(0), eta=0.0,
                 num_inference_steps=sample_steps, output_type="np")

    measures = {}
    if train:
        measures["train"] = harness.Measure(train_step, batch, "images")
    measures[sample_name(sample_batch, sample_steps)] = harness.Measure(sample, sample_batch,
                                                                         "images")
    return measures, {"parameters": sum(p.numel() for p in unet.parameters())}


SETUPS = {"ours": "setup_ours", "diffusers": "setup_diffusers"}


def contenders(names, backend, **kwargs):
    return [harness.Contender(name, "bench_diffusion", SETUPS[name], library=name,
                              framework="torch" if name == "diffusers" else backend,
                              kwargs=kwargs, label=LABELS[name]) for name in names]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                        choices=CONTENDERS)
    parser.add_argument("--sample-batch", type=int, default=SAMPLE_BATCH,
                        help="images per DDIM sampling call")
    parser.add_argument("--sample-steps", type=int, default=SAMPLE_STEPS)
    parser.add_argument("--no-train", action="store_true", help="sampling timings only")
    args = parser.parse_args(argv)
    harness.check_arguments(args)
    kwargs = dict(config=dict(CONFIG), batch=BATCH, sample_batch=args.sample_batch,
                  sample_steps=args.sample_steps, train=not args.no_train)
    notes = [
        "Same work per training step on both sides: 16 images scaled to [-1, 1], fresh "
        "Gaussian noise and uniform timesteps in [0, 1000), the linear-schedule noising, one "
        "UNet forward and backward, MSE against the noise, AdamW(2e-4, no weight decay); no "
        "EMA, no metrics.",
        f"Sampling: DDIM with {args.sample_steps} steps, eta 0, clipped x0, "
        f"{args.sample_batch} images per call, images/s counting finished images; ours "
        "runs the loop compiled (eager on torch), diffusers' DDIMPipeline in eager PyTorch "
        "with output_type='np'.",
        "Same architecture on both sides (parameter counts in the JSON `info`); diffusers "
        "is plain PyTorch eager whatever the Keras backend.",
    ]
    sample = sample_name(args.sample_batch, args.sample_steps)
    order = (["train"] if not args.no_train else []) + [sample]
    flops = flops_per_image(CONFIG, args.sample_steps)
    return harness.run("diffusion", contenders(args.contenders, args.backend, **kwargs), args,
                       config=kwargs, notes=notes, measure_order=order,
                       flops_per_unit={"train": flops["train"], sample: flops["sample"]})


if __name__ == "__main__":
    main()
