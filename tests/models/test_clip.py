import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_bigmodels import flops
from keras_bigmodels.losses import ContrastiveLoss, SigmoidContrastiveLoss
from keras_bigmodels.metrics import RetrievalRecall
from keras_bigmodels.models import (CLIPBackbone, CLIPContrastiveTask, CLIPTextEncoder,
                                    CLIPVisionEncoder)
from keras_bigmodels.models.clip import pack_texts
from keras_bigmodels.models.clip.config import clip_params, text_params, vision_params
from tests.testing import assert_saved_model_matches, perturb_norms_and_biases, to_numpy

TINY = dict(image_size=16, patch_size=4, vision_num_layers=2, vision_num_heads=4,
            vision_hidden_dim=32, vision_intermediate_dim=64, vocabulary_size=50,
            max_sequence_length=12, text_num_layers=2, text_num_heads=4, text_hidden_dim=32,
            text_intermediate_dim=64, projection_dim=16)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pairs(n=8, seed=0, length=10, eos=49):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, eos, (n, length)).astype("int32")
    ends = rng.randint(3, length - 1, n)
    for row, end in zip(ids, ends):
        row[end] = eos
        row[end + 1:] = 0
    # Spread-out pixels: near-uniform images give nearly equal [CLS] states at init.
    return {"images": 3 * rng.normal(size=(n, 16, 16, 3)).astype("float32"), "token_ids": ids}


@pytest.fixture(scope="module")
def clip():
    keras.utils.set_random_seed(1)
    return CLIPBackbone(**TINY)


def test_outputs_are_unit_embeddings_and_scaled_similarities(clip):
    x = pairs()
    out = to_numpy(clip(x))
    assert out["image_embedding"].shape == (8, 16) and out["text_embedding"].shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(out["image_embedding"], axis=-1), 1, atol=1e-5)
    expected = (np.exp(np.log(1 / 0.07)) * out["image_embedding"]
                @ out["text_embedding"].T)
    np.testing.assert_allclose(out["logits_per_image"], expected, atol=1e-4)
    np.testing.assert_allclose(clip.encode_image(x["images"], batch_size=3),
                               out["image_embedding"], atol=1e-5)
    np.testing.assert_allclose(clip.encode_text(x["token_ids"]), out["text_embedding"],
                               atol=1e-5)


def test_text_tower_pools_at_end_of_text_and_is_causal(clip):
    text = clip.text_encoder
    x = pairs()["token_ids"]
    out = to_numpy(text(x))
    ends = np.argmax(x, axis=1)  # id 49 is the row's largest
    np.testing.assert_allclose(out["pooled_output"],
                               out["sequence_output"][np.arange(8), ends], atol=1e-6)
    changed = x.copy()
    changed[:, -1] = 7  # after every end token: no earlier state may move
    later = to_numpy(text(changed))
    for row, end in enumerate(ends):
        np.testing.assert_allclose(later["sequence_output"][row, :end + 1],
                                   out["sequence_output"][row, :end + 1], atol=1e-5)
    by_id = CLIPTextEncoder(vocabulary_size=50, max_sequence_length=12, num_layers=1,
                            num_heads=2, hidden_dim=16, intermediate_dim=32, eos_token_id=3)
    ids = np.array([[5, 3, 40, 3, 0]], "int32")  # the first 3, not the largest id
    out = to_numpy(by_id(ids))
    np.testing.assert_allclose(out["pooled_output"], out["sequence_output"][:, 1], atol=1e-6)


def test_vision_tower_pools_post_normed_class_token(clip):
    vision = clip.vision_encoder
    out = to_numpy(vision(pairs()["images"]))
    assert out["sequence_output"].shape == (8, 17, 32)
    norm = vision.get_layer("post_norm")
    np.testing.assert_allclose(out["pooled_output"],
                               to_numpy(norm(out["sequence_output"][:, 0])), atol=1e-5)
    assert vision.get_layer("embedding").patch_embedding.patch_projection.bias is None


def test_param_counts_are_analytic(clip):
    assert clip.count_params() == clip_params(TINY)
    assert clip.vision_encoder.count_params() == vision_params(
        dict(image_size=16, patch_size=4, num_layers=2, hidden_dim=32, intermediate_dim=64))
    assert clip.text_encoder.count_params() == text_params(
        dict(vocabulary_size=50, max_sequence_length=12, num_layers=2, hidden_dim=32,
             intermediate_dim=64))
    # Unique variable paths: Keras' torch backend keys parameters by path.
    assert len({v.path for v in clip.weights}) == len(clip.weights)


def test_preset_param_counts():
    # transformers' CLIPModel for OpenAI's published configs (counted on the meta device).
    assert flops.count_params("clip-vit-base-patch32") == 151_277_313
    assert flops.count_params("clip-vit-base-patch16") == 149_620_737
    assert flops.count_params("clip-vit-large-patch14") == 427_616_513
    text = CLIPTextEncoder.from_preset("clip-vit-large-patch14", num_layers=1)
    assert (text.hidden_dim, text.num_heads, text.vocabulary_size) == (768, 12, 49408)
    assert text.count_params() == text_params(
        dict(vocabulary_size=49408, max_sequence_length=77, num_layers=1, hidden_dim=768,
             intermediate_dim=3072))


def test_flops_count_each_kernel_on_the_tokens_it_sees(clip):
    # Independent of the analytic counter: the built model's own kernels, each times the
    # tokens it multiplies (patches, image tokens, text tokens, one pooled vector), plus
    # QK^T and AV in each tower (12 L d T^2: forward and backward).
    text_length, patches = 10, (16 // 4) ** 2
    expected = 0
    for weight in clip.weights:
        if not weight.path.endswith("kernel"):
            continue
        if "patch_projection" in weight.path:
            tokens = patches
        elif weight.path.startswith("vision_encoder/"):
            tokens = patches + 1
        elif weight.path.startswith("text_encoder/"):
            tokens = text_length
        else:  # image_projection, text_projection: the pooled vector
            tokens = 1
        expected += 6 * int(np.prod(weight.shape)) * tokens
    expected += 12 * 2 * 32 * (patches + 1) ** 2 + 12 * 2 * 32 * text_length ** 2
    config = {**clip.get_config(), "family": "clip"}
    assert flops.flops_per_example(config, text_length) == expected
    assert flops.flops_per_token(config, text_length) == expected / (patches + 1 + text_length)
    with pytest.raises(ValueError, match="sequence_length"):
        flops.flops_per_token(config, 13)  # max_sequence_length is 12


def test_preset_flops_equal_open_clip_profile():
    # open_clip docs/model_profile.csv: forward GFLOPs of OpenAI's models, one 224x224
    # image and 77 text tokens (image_gflops + text_gflops); training is 3x forward.
    for name, gflops in (("clip-vit-base-patch32", 14.78), ("clip-vit-base-patch16", 41.09),
                         ("clip-vit-large-patch14", 175.33)):
        assert flops.flops_per_example(name, 77) / 3e9 == pytest.approx(gflops, abs=0.01)
        tokens = (224 // int(name[-2:])) ** 2 + 1 + 77
        assert flops.flops_per_token(name, 77) == pytest.approx(
            flops.flops_per_example(name, 77) / tokens)


def test_with_image_size_is_the_identity_at_the_same_size_and_runs_at_another(clip):
    x = pairs(2)
    same = clip.with_image_size(16)
    for a, b in zip(clip.weights, same.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    np.testing.assert_allclose(to_numpy(same(x))["logits_per_image"],
                               to_numpy(clip(x))["logits_per_image"], atol=1e-6)
    vision = clip.vision_encoder.with_image_size((24, 20))
    assert vision.grid_size == (6, 5) and clip.vision_encoder.grid_size == (4, 4)
    out = to_numpy(vision(np.ones((2, 24, 20, 3), "float32")))
    assert out["sequence_output"].shape == (2, 31, 32) and np.isfinite(out["pooled_output"]).all()
    table = to_numpy(vision.get_layer("embedding").position_embedding.embeddings)
    original = to_numpy(clip.vision_encoder.get_layer("embedding").position_embedding.embeddings)
    np.testing.assert_array_equal(table[0], original[0])  # the [CLS] position is kept
    bigger = clip.with_image_size(32)
    assert bigger.encode_image(np.ones((3, 32, 32, 3))).shape == (3, 16)
    np.testing.assert_allclose(bigger.encode_text(x["token_ids"]), clip.encode_text(x["token_ids"]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        clip.vision_encoder.with_image_size(18)  # not a multiple of the 4-pixel patch
    with pytest.raises(ValueError, match="image_size"):
        clip.with_image_size((16, 0))


def test_with_image_size_matches_transformers_interpolate_pos_encoding(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import CLIPVisionModel

    torch.manual_seed(2)
    model = CLIPVisionModel(hf_config(97).vision_config).eval()
    perturb_norms_and_biases(model)
    model.save_pretrained(str(tmp_path))
    images = np.random.RandomState(5).rand(2, 3, 24, 24).astype("float32")
    with torch.no_grad():
        ref = model(pixel_values=torch.tensor(images), interpolate_pos_encoding=True)
    encoder = CLIPVisionEncoder.from_huggingface(str(tmp_path)).with_image_size(24)
    out = to_numpy(encoder(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out["sequence_output"], ref.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["pooled_output"], ref.pooler_output.numpy(), atol=1e-4)


def test_penultimate_sequence_output_matches_transformers_hidden_states(tmp_path):
    # Stable Diffusion 2: final_layer_norm(hidden_states[-2]); three blocks so that -2 is
    # neither the first nor the last.
    torch = pytest.importorskip("torch")
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(3)
    config = CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=3, num_attention_heads=4,
                            max_position_embeddings=16, eos_token_id=97, bos_token_id=1,
                            pad_token_id=0)
    model = CLIPTextModel(config).eval()
    perturb_norms_and_biases(model)
    model.save_pretrained(str(tmp_path))
    ids = np.array([[1, 5, 9, 33, 97, 0], [1, 7, 97, 0, 0, 0]])
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), output_hidden_states=True)
        # transformers 5 puts the layers on the model itself, 4 under `text_model`.
        norm = getattr(model, "text_model", model).final_layer_norm
        expected = {layer: norm(ref.hidden_states[layer]).numpy() for layer in (-2, 1)}
    for layer, hidden_index in ((-2, -2), (0, 1)):
        encoder = CLIPTextEncoder.from_huggingface(str(tmp_path), sequence_output_layer=layer)
        out = to_numpy(encoder(ids.astype("int32")))
        np.testing.assert_allclose(out["sequence_output"], expected[hidden_index], atol=1e-4)
        # The pooled text feature stays the last block's.
        np.testing.assert_allclose(out["pooled_output"], ref.pooler_output.numpy(), atol=1e-4)
    assert not np.allclose(expected[-2], ref.last_hidden_state.numpy(), atol=1e-2)
    restored = CLIPTextEncoder.from_config(encoder.get_config())
    assert restored.sequence_output_layer == 0
    with pytest.raises(ValueError, match="sequence_output_layer"):
        CLIPTextEncoder(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
                        intermediate_dim=8, sequence_output_layer=-3)
    with pytest.raises(ValueError, match="sequence_output_layer"):
        CLIPTextEncoder(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
                        intermediate_dim=8, sequence_output_layer=2)


def test_losses_and_recall_against_numpy():
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(5, 5)).astype("float32") * 3

    def log_softmax(z, axis):
        z = z - z.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

    expected = -(np.trace(log_softmax(logits, 1)) + np.trace(log_softmax(logits, 0))) / 10
    np.testing.assert_allclose(float(ContrastiveLoss()(np.zeros(5), logits)), expected,
                               rtol=1e-5)
    signs = 2 * np.eye(5) - 1
    expected = np.sum(np.log1p(np.exp(-signs * logits))) / 5
    np.testing.assert_allclose(float(SigmoidContrastiveLoss()(np.zeros(5), logits)), expected,
                               rtol=1e-5)
    for direction, z in (("image_to_text", logits), ("text_to_image", logits.T)):
        for k in (1, 2):
            metric = RetrievalRecall(k, direction)
            metric.update_state(None, logits)
            rank = (z > np.diag(z)[:, None]).sum(1)
            assert float(metric.result()) == pytest.approx(np.mean(rank < k))
    with pytest.raises(ValueError, match="square"):
        ContrastiveLoss()(np.zeros(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="direction"):
        RetrievalRecall(1, "both")


@pytest.mark.parametrize("loss", ["contrastive", "siglip"])
def test_fit_learns_to_pair_images_with_texts(loss):
    keras.utils.set_random_seed(2)
    task = CLIPContrastiveTask(CLIPBackbone(**TINY), loss=loss)
    task.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = pairs(8, seed=3)
    # The sigmoid loss starts from its bias of -10 and plateaus longer: 50 epochs.
    epochs = 50 if loss == "siglip" else 30
    history = task.fit(x, batch_size=8, epochs=epochs, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    # Recall of the trained model's own logits, outside the compiled step: under the
    # suite's XLA_FLAGS (--xla_backend_optimization_level=0, tests/conftest.py) the jax
    # train/test step computed recall@1 0.375-0.5 from logits whose recall is 1.0 (seed 2
    # on an Intel Xeon host; at XLA's default optimization every seed gave 1.0). The
    # metric's arithmetic has its own tests above.
    logits = to_numpy(task.predict(x, verbose=0))
    for direction, rows in (("image_to_text", logits), ("text_to_image", logits.T)):
        metric = RetrievalRecall(1, direction="image_to_text")
        metric.update_state(None, rows)
        assert float(metric.result()) > 0.5, (direction, logits)
    if loss == "siglip":
        assert task.get_layer("logit_bias").logit_bias.numpy() != -10.0


def test_logit_scale_is_clipped_at_100_by_training():
    keras.utils.set_random_seed(3)
    backbone = CLIPBackbone(**TINY, initial_logit_scale=np.log(99.0))
    task = CLIPContrastiveTask(backbone)
    task.compile(optimizer=keras.optimizers.SGD(1000.0))
    task.fit(pairs(8), batch_size=8, epochs=2, verbose=0)
    assert backbone.logit_scale <= 100.0 + 1e-3


def test_bad_input_raises_clear_errors(clip):
    with pytest.raises(ValueError, match="images"):
        clip.encode_image(np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="images"):
        clip.encode_image(np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match=r"`images` must be \[batch, 16, 16, 3\].*with_image_size"):
        clip.vision_encoder(np.zeros((1, 32, 32, 3), "float32"))
    with pytest.raises(ValueError, match=r"`images`.*num_channels=3"):
        clip.vision_encoder(np.zeros((1, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match=r"`images`.*image_size=\(16, 16\)"):
        clip({"images": np.zeros((1, 24, 24, 3), "float32"),
              "token_ids": np.ones((1, 5), "int32")})
    with pytest.raises(ValueError, match="`token_ids`.*vocabulary_size=50"):
        clip({"images": np.zeros((1, 16, 16, 3), "float32"),
              "token_ids": np.full((1, 5), 50, "int32")})
    with pytest.raises(ValueError, match="token_ids"):
        clip.encode_text(np.array([[1, 2, 50]]))
    with pytest.raises(ValueError, match="token_ids"):
        clip.encode_text(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="token_ids"):
        clip.text_encoder(np.array([[1, 2, 50]], "int32"))
    with pytest.raises(ValueError, match="max_sequence_length"):
        clip.encode_text(np.ones((1, 13), "int32"))
    with pytest.raises(ValueError, match="eos_token_id"):
        CLIPTextEncoder(vocabulary_size=10, eos_token_id=10)
    with pytest.raises(ValueError, match="projection_dim"):
        CLIPBackbone(**{**TINY, "projection_dim": 0})
    task = CLIPContrastiveTask(clip)
    assert task.input_ranges() == {"token_ids": (0, 50)}
    bad = pairs(8)
    bad["token_ids"][0, 0] = 50
    with pytest.raises(ValueError, match="token_ids"):
        task.fit(bad, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="no labels"):
        task.fit(pairs(8), np.zeros(8), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="siglip"):
        task.compile(loss="siglip")
    with pytest.raises(ValueError, match="loss"):
        CLIPContrastiveTask(clip, loss="triplet")


class WordTokenizer:
    """Whitespace words -> ids (2..), start 1, end 49: enough for the packing contract."""

    def __init__(self, words):
        self.ids = {w: i + 2 for i, w in enumerate(words)}

    def token_to_id(self, token):
        return {"<|startoftext|>": 1, "<|endoftext|>": 49}.get(token)

    def encode(self, text, add_special_tokens=False):
        return [self.ids[w] for w in text.split()]


def test_pack_texts_and_zero_shot_weights(clip):
    tokenizer = WordTokenizer("a photo of cat dog the".split())
    rows = pack_texts(["a photo of a cat", "a " * 20], tokenizer, 8)
    np.testing.assert_array_equal(rows[0], [1, 2, 3, 4, 2, 5, 49, 0])
    assert rows[1][0] == 1 and rows[1][-1] == 49  # truncated, end kept
    templates = ("a photo of a {}", "the {}")
    weights = clip.zero_shot_weights(["cat", "dog"], tokenizer, templates)
    prompts = pack_texts([t.format(c) for c in ("cat", "dog") for t in templates], tokenizer,
                         12)
    mean = clip.encode_text(prompts).reshape(2, 2, -1).mean(1)
    np.testing.assert_allclose(weights, mean / np.linalg.norm(mean, axis=-1, keepdims=True),
                               atol=1e-5)
    images = pairs(3)["images"]
    logits = clip.zero_shot_logits(images, weights)
    np.testing.assert_allclose(logits, clip.logit_scale * clip.encode_image(images) @ weights.T,
                               atol=1e-4)
    with pytest.raises(ValueError, match="templates"):
        clip.zero_shot_weights(["cat"], tokenizer, ("no slot",))


def test_save_load_round_trip(clip, tmp_path):
    assert_saved_model_matches(clip, pairs(4), tmp_path)
    task = CLIPContrastiveTask(clip, loss="siglip")
    restored = assert_saved_model_matches(task, pairs(4), tmp_path)
    assert restored.objective == "siglip"


# --------------------------------------------------------------------- transformers parity
def hf_config(eos_token_id):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=16, eos_token_id=eos_token_id,
                         bos_token_id=1, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=4),
        projection_dim=24)


@pytest.fixture(scope="module", params=[2, 97])
def hf_checkpoint(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    from transformers import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(hf_config(request.param)).eval()
    perturb_norms_and_biases(model)
    with torch.no_grad():
        model.logit_scale.fill_(2.9)
    path = str(tmp_path_factory.mktemp(f"clip_{request.param}"))
    model.save_pretrained(path)
    rng = np.random.RandomState(4)
    ids = rng.randint(3, 97, (3, 9))
    ids[:, 0] = 1
    for row, end in zip(ids, (4, 8, 6)):
        row[end] = 97 if request.param == 97 else 98  # 98: the largest id (argmax pooling)
        row[end + 1:] = 0
    images = rng.rand(2, 3, 16, 16).astype("float32")
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), pixel_values=torch.tensor(images))
        text_states = model.text_model(input_ids=torch.tensor(ids)).last_hidden_state
    return {"path": path, "ids": ids.astype("int32"), "images": images.transpose(0, 2, 3, 1),
            "image_embeds": out.image_embeds.numpy(), "text_embeds": out.text_embeds.numpy(),
            "logits": out.logits_per_image.numpy(), "text_states": text_states.numpy(),
            "vision_states": out.vision_model_output.last_hidden_state.numpy()}


def test_from_huggingface_matches_transformers(hf_checkpoint):
    ref = hf_checkpoint
    clip = CLIPBackbone.from_huggingface(ref["path"])
    out = to_numpy(clip({"images": ref["images"], "token_ids": ref["ids"]}))
    np.testing.assert_allclose(out["image_embedding"], ref["image_embeds"], atol=1e-4)
    np.testing.assert_allclose(out["text_embedding"], ref["text_embeds"], atol=1e-4)
    np.testing.assert_allclose(out["logits_per_image"], ref["logits"], atol=1e-4)
    text = CLIPTextEncoder.from_huggingface(ref["path"])
    np.testing.assert_allclose(to_numpy(text(ref["ids"]))["sequence_output"],
                               ref["text_states"], atol=1e-4)
    vision = CLIPVisionEncoder.from_huggingface(ref["path"])
    np.testing.assert_allclose(to_numpy(vision(ref["images"]))["sequence_output"],
                               ref["vision_states"], atol=1e-4)


def test_text_encoder_reads_a_clip_text_model_directory(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import CLIPTextModel

    torch.manual_seed(1)
    model = CLIPTextModel(hf_config(97).text_config).eval()  # Stable Diffusion's text_encoder
    perturb_norms_and_biases(model)
    model.save_pretrained(str(tmp_path))
    ids = np.array([[1, 5, 9, 97, 0, 0], [1, 7, 97, 0, 0, 0]])
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids))
    out = to_numpy(CLIPTextEncoder.from_huggingface(str(tmp_path))(ids.astype("int32")))
    np.testing.assert_allclose(out["sequence_output"], ref.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["pooled_output"], ref.pooler_output.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="model_type"):
        CLIPBackbone.from_huggingface(str(tmp_path))


# ------------------------------------------------------------- data parallel, global batch
def data_parallel_child(out_path):
    """Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (JAX): one step of
    the contrastive task on one device and data parallel on 8; write both to JSON."""
    from keras_bigmodels import distribution as kd

    x = pairs(16, seed=5)

    def run():
        keras.utils.set_random_seed(6)
        task = CLIPContrastiveTask(CLIPBackbone(**{**TINY, "vision_num_heads": 8,
                                                   "text_num_heads": 8}))
        task.compile(optimizer=keras.optimizers.SGD(0.5))
        loss = float(to_numpy(task.compute_loss(y_pred=task(x))))
        history = task.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        return loss, history, [to_numpy(w).tolist() for w in task.get_weights()[:4]] + [
            float(to_numpy(task.backbone.get_layer("logit_scale").logit_scale))]

    single = run()
    kd.data_parallel()
    parallel = run()
    with open(out_path, "w") as f:
        json.dump({"devices": len(keras.distribution.list_devices()), "single": single,
                   "parallel": parallel}, f)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is JAX's")
def test_data_parallel_loss_uses_the_global_batch(tmp_path):
    out = str(tmp_path / "dp.json")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                        "--xla_backend_optimization_level=0",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = f"from tests.models.test_clip import data_parallel_child; data_parallel_child({out!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out) as f:
        result = json.load(f)
    assert result["devices"] == 8
    (loss, history, weights), (dp_loss, dp_history, dp_weights) = (
        (r[0], r[1], r[2:]) for r in (result["single"], result["parallel"]))
    # The global-batch loss (16 pairs: 15 negatives each), not a mean of 8 local ones.
    assert abs(dp_loss - loss) < 1e-5
    for key in history:
        np.testing.assert_allclose(dp_history[key], history[key], atol=1e-5, err_msg=key)
    for a, b in zip(dp_weights[0][:-1], weights[0][:-1]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    np.testing.assert_allclose(dp_weights[0][-1], weights[0][-1], atol=1e-6)


# ------------------------------------------------------------ with CLIP's own tokenizer
from tests.test_tokenizers import clip_dir  # noqa: E402,F401  (a vocab.json + merges.txt)


def test_pack_texts_with_clip_bpe_equals_transformers_padding(clip_dir):  # noqa: F811
    transformers = pytest.importorskip("transformers")
    from keras_bigmodels.checkpoints import read_tokenizer

    ours = read_tokenizer(str(clip_dir))
    reference = transformers.CLIPTokenizer.from_pretrained(str(clip_dir))
    texts = ["a photo of a cat", "A Photo of the number SEVEN, drawn by hand " * 3]
    expected = reference(texts, padding="max_length", max_length=16,
                         truncation=True)["input_ids"]
    packed = pack_texts(texts, ours, 16, pad_token_id=ours.pad_token_id)
    np.testing.assert_array_equal(packed, expected)
    # Pooling at the largest id finds <|endoftext|>, CLIP's last id, in every row.
    assert ours.token_to_id("<|endoftext|>") == ours.vocabulary_size - 1
    assert list(np.argmax(packed, axis=1)) == [list(row).index(ours.eos_token_id)
                                              for row in packed]
