"""UNet blocks against a numpy formula and diffusers' own modules (weights mapped by name)."""

import math

import numpy as np
import pytest

from keras_bigmodels.checkpoints import WeightLoader
from keras_bigmodels.layers.unet import (
    AttentionBlock2D,
    Downsample2D,
    ResnetBlock2D,
    SpatialTransformer,
    TimestepEmbedding,
    Timesteps,
    UNetDownBlock,
    UNetMidBlock,
    UNetUpBlock,
    Upsample2D,
    check_level_channels,
    down_blocks,
    timestep_embedding,
    up_blocks,
)
from keras_bigmodels.models.diffusion import huggingface
from tests.models.test_diffusion_networks import nchw, perturb
from tests.testing import assert_close, assert_layer_roundtrip, to_numpy


def numpy_timestep_embedding(timesteps, dim, flip_sin_to_cos, freq_shift):
    half = dim // 2
    frequencies = np.exp(-math.log(10000) * np.arange(half) / (half - freq_shift))
    angles = np.asarray(timesteps, "float64")[:, None] * frequencies[None]
    parts = [np.cos(angles), np.sin(angles)] if flip_sin_to_cos else [np.sin(angles),
                                                                       np.cos(angles)]
    embedding = np.concatenate(parts, axis=-1)
    return np.pad(embedding, [(0, 0), (0, dim % 2)])


@pytest.mark.parametrize("dim,flip,shift", [(32, True, 0), (17, False, 1)])
def test_timestep_embedding_formula(dim, flip, shift):
    timesteps = np.array([0, 1, 37.5, 999])
    expected = numpy_timestep_embedding(timesteps, dim, flip, shift)
    assert_close(timestep_embedding(timesteps, dim, flip, shift), expected, atol=2e-4)
    assert_close(Timesteps(dim, flip, shift)(timesteps), expected, atol=2e-4)


def _compare(torch_module, layer, map_weights, keras_inputs, torch_inputs, atol=1e-5, **kw):
    torch = pytest.importorskip("torch")
    perturb(torch_module)
    layer(*keras_inputs, **kw)  # build
    loader = WeightLoader({k: v.numpy() for k, v in torch_module.state_dict().items()})
    map_weights(loader, layer)
    loader.finish()
    with torch.no_grad():
        expected = torch_module(*[torch.tensor(x) for x in torch_inputs])
    expected = getattr(expected, "sample", expected)
    if isinstance(expected, tuple):
        expected = expected[0]
    return to_numpy(layer(*keras_inputs, **kw)), expected.numpy()


@pytest.mark.parametrize("in_channels,out_channels,scale_shift", [(16, 16, False),
                                                                  (16, 32, True)])
def test_resnet_block_matches_diffusers(in_channels, out_channels, scale_shift):
    resnet = pytest.importorskip("diffusers.models.resnet")
    norm = "scale_shift" if scale_shift else "default"
    reference = resnet.ResnetBlock2D(in_channels=in_channels, out_channels=out_channels,
                                     temb_channels=24, groups=4, eps=1e-5,
                                     time_embedding_norm=norm, output_scale_factor=1.5)
    block = ResnetBlock2D(out_channels, groups=4, epsilon=1e-5, time_embedding_norm=norm,
                          output_scale_factor=1.5)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 6, 6, in_channels)).astype("float32")
    time = rng.normal(size=(2, 24)).astype("float32")
    actual, expected = _compare(
        reference, block, lambda loader, layer: _mapped(huggingface._resnet, loader, layer),
        [images, time], [nchw(images), time])
    assert_close(nchw(actual), expected, atol=1e-5)


def _mapped(mapping, loader, layer):
    # diffusers modules saved alone have no prefix: strip the leading "." of our names.
    loader.weights = {"." + k: v for k, v in loader.weights.items()}
    mapping(loader, layer, "")


@pytest.mark.parametrize("padding", [0, 1])
def test_downsample_matches_diffusers(padding):
    sampling = pytest.importorskip("diffusers.models.downsampling")
    reference = sampling.Downsample2D(8, use_conv=True, out_channels=8, padding=padding,
                                      name="op")
    images = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype("float32")
    layer = Downsample2D(8, padding=padding)
    actual, expected = _compare(
        reference, layer,
        lambda loader, l: _mapped(lambda ld, x, n: huggingface.conv(ld, x.conv, f"{n}.conv"),
                                  loader, l),
        [images], [nchw(images)])
    assert actual.shape == (1, 4, 4, 8)
    assert_close(nchw(actual), expected, atol=1e-5)


def test_upsample_matches_diffusers():
    sampling = pytest.importorskip("diffusers.models.upsampling")
    reference = sampling.Upsample2D(8, use_conv=True, out_channels=4)
    images = np.random.default_rng(0).normal(size=(1, 3, 5, 8)).astype("float32")
    layer = Upsample2D(4)
    actual, expected = _compare(
        reference, layer,
        lambda loader, l: _mapped(lambda ld, x, n: huggingface.conv(ld, x.conv, f"{n}.conv"),
                                  loader, l),
        [images], [nchw(images)])
    assert actual.shape == (1, 6, 10, 4)
    assert_close(nchw(actual), expected, atol=1e-5)


def test_attention_block_matches_diffusers():
    attention = pytest.importorskip("diffusers.models.attention_processor")
    reference = attention.Attention(16, heads=2, dim_head=8, norm_num_groups=4, eps=1e-6,
                                    residual_connection=True, bias=True, upcast_softmax=True,
                                    rescale_output_factor=2.0, _from_deprecated_attn_block=True)
    images = np.random.default_rng(0).normal(size=(2, 4, 3, 16)).astype("float32")
    layer = AttentionBlock2D(num_heads=2, groups=4, rescale_output_factor=2.0)
    actual, expected = _compare(
        reference, layer, lambda loader, l: _mapped(huggingface._attention_block, loader, l),
        [images], [nchw(images)])
    assert_close(nchw(actual), expected, atol=1e-5)


@pytest.mark.parametrize("linear", [False, True])
def test_spatial_transformer_matches_diffusers(linear):
    transformers = pytest.importorskip("diffusers.models.transformers.transformer_2d")
    torch = pytest.importorskip("torch")
    reference = transformers.Transformer2DModel(num_attention_heads=2, attention_head_dim=8,
                                                in_channels=16, num_layers=2,
                                                cross_attention_dim=12, norm_num_groups=4,
                                                use_linear_projection=linear)
    perturb(reference)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 3, 4, 16)).astype("float32")
    context = rng.normal(size=(2, 5, 12)).astype("float32")
    layer = SpatialTransformer(2, num_layers=2, cross_attention_dim=12, groups=4,
                               use_linear_projection=linear)
    layer(images, context)
    loader = WeightLoader({"." + k: v.numpy() for k, v in reference.state_dict().items()})
    huggingface._spatial_transformer(loader, layer, "")
    loader.finish()
    with torch.no_grad():
        expected = reference(torch.tensor(nchw(images)),
                             encoder_hidden_states=torch.tensor(context)).sample.numpy()
    assert_close(nchw(to_numpy(layer(images, context))), expected, atol=1e-5)


def test_level_blocks_shapes_and_skips():
    time = np.zeros((1, 32), "float32")
    images = np.zeros((1, 8, 8, 8), "float32")
    down = UNetDownBlock(16, num_layers=2, attention="self", num_heads=2, groups=4)
    hidden, skips = down(images, time)
    assert hidden.shape == (1, 4, 4, 16)
    assert [s.shape for s in skips] == [(1, 8, 8, 16), (1, 8, 8, 16), (1, 4, 4, 16)]
    mid = UNetMidBlock(16, attention="cross", num_heads=2, groups=4, cross_attention_dim=6)
    context = np.zeros((1, 3, 6), "float32")
    assert mid(hidden, time, context).shape == (1, 4, 4, 16)
    # The lowest skip (same resolution) is consumed first; then the block upsamples.
    up = UNetUpBlock(8, num_layers=1, groups=4)
    assert up(hidden, skips, time).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="attention"):
        UNetDownBlock(16, attention="global")
    with pytest.raises(ValueError, match="cross_attention_dim"):
        UNetMidBlock(16, attention="cross")


def test_level_lists_mirror_the_encoder():
    """down_blocks/up_blocks: the levels every UNet and the autoencoder build."""
    down = down_blocks((8, 16, 16), 2, attention=(None, "self", None), num_heads=(1, 2, 4),
                       groups=4)
    assert [b.name for b in down] == ["down_block_0", "down_block_1", "down_block_2"]
    assert [b.add_downsample for b in down] == [True, True, False]
    assert [b.attention for b in down] == [None, "self", None]
    up = up_blocks((8, 16, 16), 3, attention=(None, "self", None), num_heads=(1, 2, 4),
                   groups=4)
    # Deepest level first, so the up block i mirrors down block levels - 1 - i.
    assert [b.out_channels for b in up] == [16, 16, 8]
    assert [b.attention for b in up] == [None, "self", None]
    assert [b.num_heads for b in up] == [4, 2, 1]
    assert [b.add_upsample for b in up] == [True, True, False]
    assert all(b.num_layers == 3 for b in up)
    with pytest.raises(ValueError, match="norm_num_groups"):
        check_level_channels((8, 12), 8)
    with pytest.raises(ValueError, match="block_out_channels"):
        check_level_channels((), 8)


def test_layers_roundtrip_config(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(1, 4, 4, 16)).astype("float32")
    time = rng.normal(size=(1, 32)).astype("float32")
    assert_layer_roundtrip(TimestepEmbedding(32), time[:, :16], tmp_path)
    assert_layer_roundtrip(Downsample2D(padding=0), images, tmp_path)
    assert_layer_roundtrip(Upsample2D(8), images, tmp_path)
    assert_layer_roundtrip(AttentionBlock2D(2, groups=4), images, tmp_path)
    block = ResnetBlock2D(8, groups=4, time_embedding_norm="scale_shift")
    expected = to_numpy(block(images, time))
    clone = ResnetBlock2D.from_config(block.get_config())
    clone(images, time)
    clone.set_weights(block.get_weights())
    assert_close(clone(images, time), expected, atol=1e-6)
