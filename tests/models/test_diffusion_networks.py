"""UNet2D, UNet2DCondition and AutoencoderKL: diffusers parity, presets, configs, bad input."""

import numpy as np
import pytest
import keras

from keras_bigmodels import flops
from keras_bigmodels.models.diffusion import AutoencoderKL, UNet2D, UNet2DCondition
from keras_bigmodels.models.diffusion.config import (
    count_autoencoder_kl_params,
    count_unet2d_condition_params,
    count_unet2d_params,
    unet2d_flops,
)
from tests.testing import assert_close, assert_saved_model_matches, to_numpy

TINY_UNET = dict(block_out_channels=(32, 64), attention_levels=(False, True),
                 layers_per_block=1, attention_head_dim=16, norm_num_groups=8)
TINY_CONDITION = dict(block_out_channels=(32, 64), cross_attention_levels=(True, False),
                      layers_per_block=1, num_heads=2, cross_attention_dim=24,
                      norm_num_groups=8)
TINY_VAE = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)


def perturb(torch_model, seed=0):
    """Move every GroupNorm/LayerNorm weight and bias and every other bias off its default,
    so that a swapped or skipped one shows; asserts none stayed at its default."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in torch_model.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.weight.add_(0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.3 * torch.randn(module.bias.shape, generator=generator))
        for name, parameter in torch_model.named_parameters():
            if name.endswith("bias"):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        for module in torch_model.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                assert not torch.allclose(module.weight, torch.ones_like(module.weight))
                assert not torch.allclose(module.bias, torch.zeros_like(module.bias))
    return torch_model.eval()


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


# diffusers parity ---------------------------------------------------------------------------

UNET2D_CASES = {
    "class_conditional": dict(
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        attention_head_dim=16, norm_num_groups=8, num_class_embeds=5),
    # DDPM's conventions: [sin, cos] order, frequency shift 1, bottom/right padding,
    # one head per attention layer, scale-shift time conditioning, two resnets per level.
    "ddpm_style": dict(
        block_out_channels=(32, 64), down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"), layers_per_block=2,
        attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6, flip_sin_to_cos=False,
        freq_shift=1, downsample_padding=0, resnet_time_scale_shift="scale_shift",
        mid_block_scale_factor=2.0 ** 0.5),
}


@pytest.mark.parametrize("case", sorted(UNET2D_CASES))
def test_unet2d_matches_diffusers(case, tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    config = UNET2D_CASES[case]
    reference = perturb(diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3,
                                              **config))
    reference.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    timesteps = np.array([3, 700], "int32")
    labels = np.array([1, 4], "int32")
    with torch.no_grad():
        kwargs = {"class_labels": torch.tensor(labels)} if "num_class_embeds" in config else {}
        expected = reference(torch.tensor(nchw(images)), torch.tensor(timesteps),
                             **kwargs).sample.numpy()
    ours = UNet2D.from_diffusers(tmp_path)
    inputs = [images, timesteps] + ([labels] if "num_class_embeds" in config else [])
    assert_close(nchw(to_numpy(ours(inputs))), expected, atol=1e-4)
    assert ours.count_params() == sum(p.numel() for p in reference.parameters())


def tiny_diffusers_condition_unet(diffusers, in_channels, **overrides):
    """A perturbed two-level diffusers UNet2DConditionModel (cross-attention on level 0)."""
    return perturb(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=in_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
        attention_head_dim=2, norm_num_groups=8, **overrides))


def test_unet2d_condition_matches_diffusers(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    reference = tiny_diffusers_condition_unet(
        diffusers, in_channels=4, block_out_channels=(32, 64), cross_attention_dim=24,
        transformer_layers_per_block=2)
    reference.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    timesteps = np.array([1.0, 523.5], "float32")  # fractional steps, as DDIM may pass
    context = rng.normal(size=(2, 5, 24)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.tensor(nchw(latents)), torch.tensor(timesteps),
                             encoder_hidden_states=torch.tensor(context)).sample.numpy()
    ours = UNet2DCondition.from_diffusers(tmp_path)
    assert ours.transformer_layers == 2
    assert_close(nchw(to_numpy(ours([latents, timesteps, context]))), expected, atol=1e-4)
    assert ours.count_params() == sum(p.numel() for p in reference.parameters())


def test_unet2d_condition_projection_class_embedding_matches_diffusers(tmp_path):
    """unCLIP's additive path: class_embed_type="projection" adds an MLP of a vector (the
    CLIP image embedding) to the time embedding."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    reference = tiny_diffusers_condition_unet(
        diffusers, in_channels=3, block_out_channels=(32, 32), cross_attention_dim=16,
        class_embed_type="projection", projection_class_embeddings_input_dim=12)
    reference.save_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    timesteps = np.array([4, 801], "int32")
    context = rng.normal(size=(2, 3, 16)).astype("float32")
    added = rng.normal(size=(2, 12)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.tensor(nchw(latents)), torch.tensor(timesteps),
                             encoder_hidden_states=torch.tensor(context),
                             class_labels=torch.tensor(added)).sample.numpy()
    ours = UNet2DCondition.from_diffusers(tmp_path)
    assert ours.class_embedding_input_dim == 12
    assert_close(nchw(to_numpy(ours([latents, timesteps, context, added]))), expected,
                 atol=1e-4)
    assert ours.count_params() == sum(p.numel() for p in reference.parameters())
    # The added embedding reaches the output.
    assert not np.allclose(to_numpy(ours([latents, timesteps, context, added + 1.0])),
                           to_numpy(ours([latents, timesteps, context, added])), atol=1e-4)
    with pytest.raises(ValueError, match="class_labels"):
        ours([latents, timesteps, context, added[:, :5]])


def test_autoencoder_kl_matches_diffusers(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    reference = perturb(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
        layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=16))
    reference.save_pretrained(tmp_path)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    with torch.no_grad():
        posterior = reference.encode(torch.tensor(nchw(images))).latent_dist
        latents = np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype("float32")
        decoded = reference.decode(torch.tensor(latents)).sample.numpy()
        reconstruction = reference(torch.tensor(nchw(images))).sample.numpy()
    ours = AutoencoderKL.from_diffusers(tmp_path)
    distribution = ours.encode(images)
    assert_close(nchw(to_numpy(distribution.mean)), posterior.mean.numpy(), atol=1e-4)
    assert_close(nchw(to_numpy(distribution.logvar)), posterior.logvar.numpy(), atol=1e-4)
    assert_close(nchw(to_numpy(ours.decode(nhwc(latents)))), decoded, atol=1e-4)
    assert_close(nchw(to_numpy(ours(images))), reconstruction, atol=1e-4)
    assert ours.count_params() == sum(p.numel() for p in reference.parameters())
    assert ours.scaling_factor == pytest.approx(reference.config.scaling_factor)


def test_from_diffusers_refuses_unsupported_options(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.UNet2DModel(
        sample_size=16, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        norm_num_groups=8, time_embedding_type="fourier")
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="time_embedding_type"):
        UNet2D.from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        UNet2DCondition.from_diffusers(tmp_path)


# presets and counts -------------------------------------------------------------------------

def test_preset_counts_without_allocating():
    # diffusers' counts of the released configs (built on torch's meta device).
    assert flops.count_params("stable-diffusion-v1-unet") == 859_520_964
    assert flops.count_params("stable-diffusion-v1-vae") == 83_653_863
    assert flops.count_params("ddpm-cifar10") == 35_746_307


@pytest.mark.parametrize("config", [
    TINY_UNET, dict(TINY_UNET, num_classes=7, time_embedding_norm="scale_shift"),
    dict(TINY_UNET, attention_head_dim=None, mid_block_attention=False, layers_per_block=2,
         time_embedding_dim=48, in_channels=1, out_channels=2),
])
def test_unet2d_analytic_count(config):
    assert UNet2D(**config).count_params() == count_unet2d_params(config)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's cost analysis")
@pytest.mark.parametrize("config", [
    dict(TINY_UNET, layers_per_block=2),
    dict(TINY_UNET, block_out_channels=(16, 32, 48), attention_levels=(True, False, True),
         time_embedding_norm="scale_shift", mid_block_attention=False),
])
def test_unet2d_flops_agree_with_xla(config):
    # XLA counts every FLOP of the compiled graph: norms and activations on top, and the
    # convolutions without their taps on the zero padding; the two must agree to a few
    # percent in the forward and in the gradient (the backward costs twice the forward).
    import jax

    unet = UNet2D(**config)
    images, timesteps = np.zeros((2, 32, 32, 3), "float32"), np.zeros((2,), "int32")
    unet([images, timesteps])
    trainable = [v.value for v in unet.trainable_variables]
    fixed = [v.value for v in unet.non_trainable_variables]

    def forward(params, x, t):
        return unet.stateless_call(params, fixed, [x, t])[0]

    def cost(function):
        analysis = jax.jit(function).lower(trainable, images, timesteps).compile()
        analysis = analysis.cost_analysis()
        return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]

    xla_forward = cost(forward)
    xla_training = cost(jax.grad(lambda p, x, t: (forward(p, x, t) ** 2).sum()))
    assert abs(unet2d_flops(config, 32, training=False) * 2 / xla_forward - 1) < 0.1
    assert abs(unet2d_flops(config, 32) * 2 / xla_training - 1) < 0.1


def test_unet2d_flops_registered_and_checked():
    preset = flops.presets.get_preset("ddpm-cifar10")
    assert flops.flops_per_example("ddpm-cifar10", 32) == unet2d_flops(preset, 32)
    assert unet2d_flops(preset, 32) == 3 * unet2d_flops(preset, 32, training=False)
    assert unet2d_flops(TINY_UNET, (32, 16)) == unet2d_flops(TINY_UNET, (16, 32))
    for bad in (36, (32, 30), "32", 0, (32,)):
        with pytest.raises(ValueError, match="image_size"):
            unet2d_flops(preset, bad)


@pytest.mark.parametrize("config", [
    TINY_CONDITION,
    dict(TINY_CONDITION, transformer_layers=2, use_linear_projection=True, num_heads=(2, 4),
         cross_attention_levels=(True, True), layers_per_block=2),
    dict(TINY_CONDITION, class_embedding_input_dim=10),
])
def test_unet2d_condition_analytic_count(config):
    assert UNet2DCondition(**config).count_params() == count_unet2d_condition_params(config)


@pytest.mark.parametrize("config", [TINY_VAE, dict(TINY_VAE, use_quant_conv=False,
                                                   mid_block_attention=False,
                                                   latent_channels=8)])
def test_autoencoder_analytic_count(config):
    assert AutoencoderKL(**config).count_params() == count_autoencoder_kl_params(config)


def test_from_preset_overrides():
    unet = UNet2DCondition.from_preset("stable-diffusion-v1-unet", block_out_channels=(32, 64),
                                       cross_attention_levels=(True, False), num_heads=2,
                                       norm_num_groups=8, cross_attention_dim=16)
    assert unet.cross_attention_dim == 16 and unet.in_channels == 4


# configs and saving -------------------------------------------------------------------------

def test_unet2d_config_roundtrip_and_keras_file(tmp_path):
    unet = UNet2D(**TINY_UNET, num_classes=3)
    inputs = [np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32"),
              np.array([5, 600], "int32"), np.array([0, 2], "int32")]
    clone = UNet2D.from_config(unet.get_config())
    clone.set_weights(unet.get_weights())
    assert_close(clone(inputs), unet(inputs), atol=1e-6)
    assert_saved_model_matches(unet, inputs, tmp_path)


def test_unet2d_condition_config_roundtrip(tmp_path):
    unet = UNet2DCondition(**TINY_CONDITION)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(1, 4, 4, 4)).astype("float32"), np.array([10], "int32"),
              rng.normal(size=(1, 3, 24)).astype("float32")]
    clone = UNet2DCondition.from_config(unet.get_config())
    clone.set_weights(unet.get_weights())
    assert_close(clone(inputs), unet(inputs), atol=1e-6)
    assert_saved_model_matches(unet, inputs, tmp_path)


def test_autoencoder_config_roundtrip_scaling_and_sampling(tmp_path):
    vae = AutoencoderKL(**TINY_VAE)
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 8, 8, 3)).astype("float32")
    clone = AutoencoderKL.from_config(vae.get_config())
    clone.set_weights(vae.get_weights())
    assert_close(clone(images), vae(images), atol=1e-6)
    assert_saved_model_matches(vae, images, tmp_path)
    distribution = vae.encode(images)
    mean = to_numpy(distribution.mean)
    assert mean.shape == (2, 4, 4, 4)
    assert_close(vae.encode_latents(images, sample=False), mean * 0.18215, atol=1e-6)
    assert_close(vae.decode_latents(mean * 0.18215), vae.decode(mean), atol=1e-5)
    first = to_numpy(vae.encode_latents(images, seed=1))
    assert np.allclose(first, to_numpy(vae.encode_latents(images, seed=1)))
    assert not np.allclose(first, to_numpy(vae.encode_latents(images, seed=2)))
    assert to_numpy(distribution.kl()).shape == (2,)


def test_unet_trains():
    """One optimizer step on the denoising loss lowers it on a fixed batch."""
    unet = UNet2D(**TINY_UNET)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    timesteps = rng.integers(0, 1000, size=(4,)).astype("int32")
    noise = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    unet.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    first = unet.train_on_batch([images, timesteps], noise)
    for _ in range(4):
        last = unet.train_on_batch([images, timesteps], noise)
    assert last < first


# bad input ----------------------------------------------------------------------------------

def test_bad_inputs_name_the_argument():
    unet = UNet2D(**TINY_UNET)
    with pytest.raises(ValueError, match=r"noisy_images.*height 9.*multiples of 2"):
        unet([np.zeros((1, 9, 8, 3), "float32"), np.array([1], "int32")])
    with pytest.raises(ValueError, match=r"4 channels.*in_channels.*=3"):
        unet([np.zeros((1, 8, 8, 4), "float32"), np.array([1], "int32")])
    with pytest.raises(ValueError, match=r"inputs.*noisy_images, timesteps"):
        unet([np.zeros((1, 8, 8, 3), "float32")])
    condition = UNet2DCondition(**TINY_CONDITION)
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*cross_attention_dim=24"):
        condition([np.zeros((1, 4, 4, 4), "float32"), np.array([1], "int32"),
                   np.zeros((1, 3, 7), "float32")])
    with pytest.raises(ValueError, match=r"noisy_latents.*width 5"):
        condition([np.zeros((1, 4, 5, 4), "float32"), np.array([1], "int32"),
                   np.zeros((1, 3, 24), "float32")])
    vae = AutoencoderKL(**TINY_VAE)
    with pytest.raises(ValueError, match=r"images.*height 9"):
        vae.encode(np.zeros((1, 9, 8, 3), "float32"))
    with pytest.raises(ValueError, match=r"latents.*latent_channels=4"):
        vae.decode(np.zeros((1, 4, 4, 3), "float32"))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="norm_num_groups"):
        UNet2D(**dict(TINY_UNET, norm_num_groups=12))
    with pytest.raises(ValueError, match="attention_levels"):
        UNet2D(**dict(TINY_UNET, attention_levels=(True,)))
    with pytest.raises(ValueError, match="attention_head_dim"):
        UNet2D(**dict(TINY_UNET, attention_head_dim=24))
    with pytest.raises(ValueError, match="num_heads"):
        UNet2DCondition(**dict(TINY_CONDITION, num_heads=3))
    with pytest.raises(ValueError, match="time_embedding_norm"):
        UNet2D(**dict(TINY_UNET, time_embedding_norm="ada"))
