"""LatentTextToImage, the unCLIP prior and decoder, and the pipeline on tiny configs."""

import os

import keras
import numpy as np
import pytest

from keras_bigmodels.models.clip import CLIPTextEncoder
from keras_bigmodels.models.diffusion import (AutoencoderKL, DiffusionPrior,
                                              ImageEmbeddingDecoder, LatentTextToImage,
                                              PriorTransformer, UNet2DCondition, UnCLIPPipeline)

EMPTY = [1, 2, 0, 0, 0, 0]  # start, end, padding: the packed empty prompt


def tiny_parts(cross_dim=16, in_channels=4, added_dim=None):
    keras.utils.set_random_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        mid_block_attention=False)
    unet = UNet2DCondition(in_channels=in_channels, out_channels=in_channels,
                           block_out_channels=(16, 16), cross_attention_levels=(True, False),
                           layers_per_block=1, num_heads=2, cross_attention_dim=cross_dim,
                           norm_num_groups=4, class_embedding_input_dim=added_dim)
    text = CLIPTextEncoder(vocabulary_size=12, max_sequence_length=6, num_layers=1,
                           num_heads=2, hidden_dim=16, intermediate_dim=32, eos_token_id=2)
    return vae, unet, text


def caption_data(n=32, size=8):
    """Images that are a flat colour chosen by the caption's token (3, 4 or 5)."""
    rng = np.random.default_rng(0)
    words = rng.integers(3, 6, n)
    colours = np.eye(3, dtype="float32")[words - 3]
    images = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()
    token_ids = np.zeros((n, 6), "int32")
    token_ids[:, 0], token_ids[:, 1], token_ids[:, 2] = 1, words, 2
    return images, token_ids


def test_latent_text_to_image_trains_and_generates():
    vae, unet, text = tiny_parts()
    frozen = [v.numpy().copy() if hasattr(v, "numpy") else keras.ops.convert_to_numpy(v)
              for v in vae.weights[:2] + text.weights[:2]]
    model = LatentTextToImage(vae, unet, text, image_shape=(8, 8, 3),
                              empty_prompt_ids=EMPTY, num_train_timesteps=100,
                              learning_rate=2e-3, seed=0)
    images, token_ids = caption_data(16)
    history = model.fit((images, token_ids), epochs=4, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # The VAE and the text encoder stay frozen.
    for before, after in zip(frozen, vae.weights[:2] + text.weights[:2]):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))

    out = model.generate(token_ids[:2], num_steps=4, guidance_scale=1.0, seed=3)
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, model.generate(token_ids[:2], num_steps=4, seed=3,
                                                   guidance_scale=1.0), atol=1e-5)
    guided = model.generate(token_ids[:2], num_steps=4, guidance_scale=4.0, seed=3)
    assert guided.shape == (2, 8, 8, 3) and np.isfinite(guided).all()
    assert not np.allclose(guided, out, atol=1e-4)  # the unconditional pass was used
    other_seed = model.generate(token_ids[:2], num_steps=4, guidance_scale=1.0, seed=4)
    assert not np.allclose(other_seed, out, atol=1e-4)


def test_latent_text_to_image_bad_input():
    vae, unet, text = tiny_parts()
    with pytest.raises(ValueError, match="empty_prompt_ids"):
        LatentTextToImage(vae, unet, text, image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="divisible"):
        LatentTextToImage(vae, unet, text, image_shape=(18, 18, 3), empty_prompt_ids=EMPTY)
    with pytest.raises(ValueError, match="channels"):
        LatentTextToImage(vae, unet, text, image_shape=(16, 16, 1), empty_prompt_ids=EMPTY)
    model = LatentTextToImage(vae, unet, text, image_shape=(16, 16, 3),
                              empty_prompt_ids=EMPTY, num_train_timesteps=100)
    ids = np.array([[1, 3, 2, 0, 0, 0]], "int32")
    with pytest.raises(ValueError, match="num_steps"):
        model.generate(ids, num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        model.generate(ids, num_steps=101)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate(ids, num_steps=2, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="prompts"):
        model.generate(["a red square"], num_steps=2)  # strings need a tokenizer
    with pytest.raises(ValueError, match="prompts"):
        model.generate(np.zeros((1, 4), "int32"), num_steps=2)  # wrong length
    with pytest.raises(ValueError, match="x"):
        model.fit((np.zeros((2, 8, 8, 3), "float32"), np.zeros((2, 6), "int32")), verbose=0)


def linear_pairs(n=256, dim=8):
    rng = np.random.default_rng(0)
    text = rng.standard_normal((n, dim)).astype("float32")
    mapping = rng.standard_normal((dim, dim)).astype("float32") / np.sqrt(dim)
    return text, (text @ mapping).astype("float32")


def cosine(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_prior_learns_a_linear_mapping():
    keras.utils.set_random_seed(0)
    text, image = linear_pairs()
    prior = DiffusionPrior(PriorTransformer(embedding_dim=8, hidden_dim=32, num_layers=2,
                                            num_heads=2),
                           num_train_timesteps=100, learning_rate=3e-3, seed=0)
    history = prior.fit(text, image, epochs=12, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    generated = prior.generate(text[:32], num_steps=10, seed=0)
    assert generated.shape == (32, 8) and generated.dtype == np.float32
    np.testing.assert_allclose(generated, prior.generate(text[:32], num_steps=10, seed=0),
                               atol=1e-5)
    learned = cosine(generated, image[:32]).mean()
    chance = cosine(np.random.default_rng(1).standard_normal((32, 8)), image[:32]).mean()
    assert learned > 0.7 and learned > chance + 0.5
    guided = prior.generate(text[:4], num_steps=5, guidance_scale=2.0, seed=0)
    assert np.isfinite(guided).all()
    with pytest.raises(ValueError, match="text_embeddings"):
        prior.generate(np.zeros((2, 5), "float32"), num_steps=2)
    with pytest.raises(ValueError, match="num_steps"):
        prior.generate(text[:2], num_steps=0)
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionPrior(prior.backbone, prediction_type="v")


def test_unclip_pipeline_end_to_end(tmp_path):
    _, unet, text = tiny_parts(cross_dim=16, in_channels=3, added_dim=16)
    prior = DiffusionPrior(PriorTransformer(embedding_dim=16, hidden_dim=16, num_layers=1,
                                            num_heads=2), num_train_timesteps=50, seed=0)
    decoder = ImageEmbeddingDecoder(unet, image_shape=(8, 8, 3), num_train_timesteps=50,
                                    seed=0)
    images, token_ids = caption_data(8)
    embeddings = keras.ops.convert_to_numpy(text(token_ids)["pooled_output"])
    prior.fit(embeddings, embeddings, epochs=1, batch_size=8, verbose=0)
    history = decoder.fit(images, embeddings, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    pipeline = UnCLIPPipeline(text, prior, decoder)
    out = pipeline.generate(token_ids[:2], num_steps=3, prior_num_steps=3,
                            guidance_scale=2.0, seed=0)
    assert out.shape == (2, 8, 8, 3) and out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="image_embeddings"):
        decoder.generate(np.zeros((1, 7), "float32"), num_steps=2)
    with pytest.raises(ValueError, match="decoder"):
        UnCLIPPipeline(text, prior, prior)

    # Saved as its three parts; the reloaded pipeline samples the same images.
    directory = os.path.join(str(tmp_path), "unclip")
    pipeline.save(directory)
    restored = UnCLIPPipeline.load(directory)
    assert isinstance(restored.decoder, ImageEmbeddingDecoder)
    np.testing.assert_allclose(
        restored.generate(token_ids[:2], num_steps=3, prior_num_steps=3, guidance_scale=2.0,
                          seed=0), out, atol=1e-5)
    with pytest.raises(ValueError, match="directory"):
        UnCLIPPipeline.load(str(tmp_path))


def test_decoder_conditions_through_both_paths():
    """unCLIP: the embedding is added to the time embedding (the unet's class_labels input)
    and projected into 4 extra context tokens; each path alone changes the prediction."""
    _, unet, _ = tiny_parts(cross_dim=16, in_channels=3, added_dim=8)
    decoder = ImageEmbeddingDecoder(unet, image_shape=(8, 8, 3), num_train_timesteps=50,
                                    seed=0)
    assert decoder.num_context_tokens == 4
    rng = np.random.default_rng(0)
    first = rng.standard_normal((2, 8)).astype("float32")
    second = rng.standard_normal((2, 8)).astype("float32")
    tokens, added = decoder._network_inputs((keras.ops.convert_to_tensor(first),))
    assert tuple(tokens.shape) == (2, 4, 16)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(added), first)
    other_tokens, _ = decoder._network_inputs((keras.ops.convert_to_tensor(second),))
    noisy = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    steps = np.array([10, 40], "int32")

    def predict(context, vector):
        return keras.ops.convert_to_numpy(unet([noisy, steps, context, vector]))

    base = predict(tokens, first)
    assert not np.allclose(predict(other_tokens, first), base, atol=1e-5)  # context tokens
    assert not np.allclose(predict(tokens, second), base, atol=1e-5)  # added embedding
    # Text states follow the 4 tokens in the cross-attention context.
    text = rng.standard_normal((2, 3, 16)).astype("float32")
    with_text, _ = decoder._network_inputs((keras.ops.convert_to_tensor(first),
                                            keras.ops.convert_to_tensor(text)))
    assert tuple(with_text.shape) == (2, 7, 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(with_text)[:, 4:], text)
    # Trains on (embeddings, text states) too, and generates from them.
    images, _ = caption_data(8)
    conditions = (rng.standard_normal((8, 8)).astype("float32"),
                  rng.standard_normal((8, 3, 16)).astype("float32"))
    history = decoder.fit(images, conditions, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    out = decoder.generate(conditions[0][:2], num_steps=2, seed=0,
                           text_states=conditions[1][:2], guidance_scale=2.0)
    assert out.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="text"):
        decoder.generate(conditions[0][:2], num_steps=2, text_states=np.zeros((2, 3, 5)))
    plain = tiny_parts(cross_dim=16, in_channels=3)[1]
    with pytest.raises(ValueError, match="class_embedding_input_dim"):
        ImageEmbeddingDecoder(plain, image_shape=(8, 8, 3))


def _same_after_loading(model, path, generate, batch):
    """Save, load with keras.models.load_model, and compare sampled images and the loss on
    a batch (the restored seed generator draws the same noise)."""
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(generate(restored), generate(model), atol=1e-5)
    x, y = batch
    restored_loss = keras.ops.convert_to_numpy(restored.compute_loss(x, y, training=False))
    loss = keras.ops.convert_to_numpy(model.compute_loss(x, y, training=False))
    np.testing.assert_allclose(restored_loss, loss, rtol=1e-5, atol=1e-6)
    return restored


def test_latent_text_to_image_and_decoder_keras_round_trip(tmp_path):
    vae, unet, text = tiny_parts()
    model = LatentTextToImage(vae, unet, text, image_shape=(8, 8, 3), empty_prompt_ids=EMPTY,
                              num_train_timesteps=50, ema_decay=0.9, seed=0)
    images, token_ids = caption_data(8)
    model.fit((images, token_ids), epochs=1, batch_size=8, verbose=0)
    restored = _same_after_loading(
        model, os.path.join(str(tmp_path), "latent.keras"),
        lambda m: m.generate(token_ids[:2], num_steps=3, guidance_scale=2.0, seed=1,
                             sampler="ddpm"),
        (images, token_ids))
    assert not restored.text_encoder.trainable and not restored.vae.trainable

    _, unet, _ = tiny_parts(cross_dim=16, in_channels=3, added_dim=8)
    decoder = ImageEmbeddingDecoder(unet, image_shape=(8, 8, 3), num_train_timesteps=50,
                                    ema_decay=0.9, num_context_tokens=2, seed=0)
    embeddings = np.random.default_rng(0).standard_normal((8, 8)).astype("float32")
    decoder.fit(images, embeddings, epochs=1, batch_size=8, verbose=0)
    restored = _same_after_loading(
        decoder, os.path.join(str(tmp_path), "decoder.keras"),
        lambda m: m.generate(embeddings[:2], num_steps=3, guidance_scale=2.0, seed=1),
        (images, embeddings))
    assert restored.num_context_tokens == 2


def test_prior_keras_round_trip(tmp_path):
    text, image = linear_pairs(32)
    prior = DiffusionPrior(PriorTransformer(embedding_dim=8, hidden_dim=16, num_layers=1,
                                            num_heads=2), num_train_timesteps=50, seed=0)
    prior.fit(text, image, epochs=1, batch_size=16, verbose=0)
    _same_after_loading(prior, os.path.join(str(tmp_path), "prior.keras"),
                        lambda m: m.generate(text[:3], num_steps=4, guidance_scale=2.0,
                                             sampler="ddpm", seed=2),
                        (text[:16], image[:16]))
