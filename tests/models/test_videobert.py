import keras
import numpy as np
import pytest

from keras_bigmodels import flops
from keras_bigmodels.models import BertBackbone
from keras_bigmodels.models.videobert import (PixelPCA, VideoBERTBackbone, VideoBERTPretrainer,
                                              VideoBERTPretrainingDataset, VideoTokenizer,
                                              evaluate_masked_visual_prediction,
                                              zero_shot_classify)
from keras_bigmodels.objectives.video_text import video_text_examples
from tests.testing import assert_close, assert_saved_model_matches, to_numpy

# A toy joint vocabulary: 0 [PAD], 1 [UNK], 2 [CLS], 3 [SEP], 4 [MASK], 5 [>], words 6..15,
# then 8 visual words (ids 16..23).
TEXT_VOCABULARY, VISUAL_VOCABULARY = 16, 8
PAD, CLS, SEP, MASK, BRIDGE = 0, 2, 3, 4, 5
SPECIALS = (0, 1, 2, 3, 5)
LAYOUT = dict(cls_token_id=CLS, sep_token_id=SEP, bridge_token_id=BRIDGE, pad_token_id=PAD,
              max_text_length=2, max_visual_length=6)
MASKING = dict(text_vocabulary_size=TEXT_VOCABULARY, visual_vocabulary_size=VISUAL_VOCABULARY,
               mask_token_id=MASK, special_token_ids=SPECIALS)
TINY = dict(text_vocabulary_size=TEXT_VOCABULARY, visual_vocabulary_size=VISUAL_VOCABULARY,
            num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
            max_sequence_length=16, dropout=0.0)


def toy_videos(count, seed):
    """Videos of class c in 0..3 whose visual words alternate between 16 + 2c and 17 + 2c;
    the caption is the word 6 + c.

    A masked visual word follows from the words two steps away (never equal to its
    neighbours), the caption word from the video, and a pair matches when the word names
    the video's class.
    """
    rng = np.random.default_rng(seed)
    classes, phase = rng.integers(0, 4, count), rng.integers(0, 2, count)
    visual = TEXT_VOCABULARY + 2 * classes[:, None] + (phase[:, None] + np.arange(6)) % 2
    text = [[6 + int(c)] for c in classes]
    return classes, visual.astype("int32"), text


def make_inputs(batch=2, seed=0):
    _, visual, text = toy_videos(batch, seed)
    examples = video_text_examples(text, visual, kinds=("joint",), negative_rate=0.0, **LAYOUT)
    inputs = {k: examples[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    inputs["mask_positions"] = np.tile(np.array([[1, 5]], "int32"), (batch, 1))
    return inputs


@pytest.fixture(scope="module")
def trained():
    """One VideoBERT trained as the paper does: masked words and visual words on joint,
    text-only and video-only examples, and alignment on joint ones (about half of them
    mismatched), all at once.

    Mismatched pairs predict no masked tokens (`VideoTextMasking`): when they did, their
    captions taught the model to ignore the video and the [CLS] head stayed at the
    majority label. 30% masking: a toy row has ~7 maskable tokens, so the caption word
    (the only one naming the class) is predicted often enough to learn it from the video.
    """
    keras.utils.set_random_seed(0)
    classes, visual, text = toy_videos(192, seed=0)
    examples = video_text_examples(text, visual, pair_keys=classes, rng=0, **LAYOUT)
    data = VideoBERTPretrainingDataset(examples, batch_size=32, seed=0, mask_rate=0.3, **MASKING)
    pretrainer = VideoBERTPretrainer(VideoBERTBackbone(**TINY))
    # 2e-3 and 40 epochs: the [CLS] head leaves the majority label after ~20 epochs, and
    # at 1e-3 / 30 epochs one backend's draw still sat near it (jax 0.69, tensorflow
    # zero-shot 0.42, measured).
    pretrainer.compile(learning_rate=2e-3)
    before = pretrainer.evaluate(data, verbose=0, return_dict=True)
    history = pretrainer.fit(data, epochs=40, verbose=0)
    return pretrainer, before, history.history


# ---------------------------------------------------------------- visual words
def hierarchical_blobs(seed=0, per_leaf=6):
    """Points around a 3-level tree of centers (k=3): scales 100, 10, 1."""
    rng = np.random.default_rng(seed)
    level_offsets = [rng.normal(size=(3, 4)) * scale for scale in (100.0, 10.0, 1.0)]
    points, paths = [], []
    for a in range(3):
        for b in range(3):
            for c in range(3):
                center = level_offsets[0][a] + level_offsets[1][b] + level_offsets[2][c]
                points.append(center + 0.01 * rng.normal(size=(per_leaf, 4)))
                paths += [(a, b, c)] * per_leaf
    return np.concatenate(points).astype("float32"), np.array(paths)


def test_video_tokenizer_recovers_the_hierarchy_and_offsets_ids():
    points, paths = hierarchical_blobs()
    tokenizer = VideoTokenizer(num_levels=3, branching_factor=3, token_offset=100, seed=0)
    ids = tokenizer.fit(points).encode(points)
    assert tokenizer.vocabulary_size == 27
    assert ids.dtype == np.int32 and ids.min() >= 100 and ids.max() < 127
    levels = tokenizer.levels(ids)
    assert levels.shape == (len(points), 3)
    np.testing.assert_array_equal(ids - 100, levels @ np.array([9, 3, 1]))
    # Each true node maps to one tokenizer node, level by level, and distinct true nodes
    # to distinct ones: the tree found is the tree that made the data.
    for depth in (1, 2, 3):
        true_nodes = [tuple(p[:depth]) for p in paths]
        found_nodes = [tuple(l[:depth]) for l in levels]
        assert len(set(zip(true_nodes, found_nodes))) == len(set(true_nodes)) == 3 ** depth
    # A word's decoded centroid is the mean of its points.
    np.testing.assert_allclose(tokenizer.decode(ids), points, atol=0.05)
    assert VideoTokenizer().vocabulary_size == 12 ** 4 == 20736  # the paper's tree


def test_video_tokenizer_save_load_and_determinism(tmp_path):
    points, _ = hierarchical_blobs(seed=1)
    features = points.reshape(9, 18, 4)  # [videos, frames, dim]
    tokenizer = VideoTokenizer(num_levels=2, branching_factor=4, token_offset=16, seed=3)
    ids = tokenizer.fit(features).encode(features)
    assert ids.shape == (9, 18)
    again = VideoTokenizer(**tokenizer.get_config()).fit(features)
    np.testing.assert_array_equal(again.encode(features), ids)
    tokenizer.save(tmp_path / "words.npz")
    loaded = VideoTokenizer.load(tmp_path / "words.npz")
    assert loaded.get_config() == tokenizer.get_config()
    np.testing.assert_array_equal(loaded.encode(features), ids)
    with pytest.raises(ValueError, match="features"):
        loaded.encode(features[..., :3])
    with pytest.raises(ValueError, match="not fitted"):
        VideoTokenizer().encode(features)
    with pytest.raises(ValueError, match="branching_factor"):
        VideoTokenizer(branching_factor=1)
    with pytest.raises(ValueError, match="path"):
        VideoTokenizer.load(tmp_path / "missing.npz")


def test_video_tokenizer_on_frames_with_pixel_pca():
    from keras_bigmodels.data import load_moving_digits

    videos = load_moving_digits(num_train=20, num_test=2, num_frames=8, canvas_size=16, seed=0)
    frames = videos["frames_train"]
    pca = PixelPCA(8).fit(frames)
    tokenizer = VideoTokenizer(num_levels=2, branching_factor=4, token_offset=10,
                               feature_encoder=pca).fit(frames)
    ids = tokenizer.encode(frames)
    assert ids.shape == (20, 8)
    plain = VideoTokenizer(**tokenizer.get_config()).fit(pca(frames))
    np.testing.assert_array_equal(ids, plain.encode(pca(frames)))
    # The digit moves, so the words of a video change over time.
    assert (ids[:, 0] != ids[:, -1]).mean() > 0.5
    with pytest.raises(ValueError, match="num_components"):
        PixelPCA(0)


# ---------------------------------------------------------------- backbone
def test_backbone_joint_vocabulary_and_config_round_trip(tmp_path):
    backbone = VideoBERTBackbone(**TINY)
    assert backbone.vocabulary_size == TEXT_VOCABULARY + VISUAL_VOCABULARY
    assert backbone.token_embedding.input_dim == 24
    config = backbone.get_config()
    assert "vocabulary_size" not in config and config["visual_vocabulary_size"] == 8
    inputs = make_inputs()
    out = backbone({k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    assert out["sequence_output"].shape == (2, 11, 32)
    assert backbone.count_params() == flops.count_params({"family": "videobert", **config})


def test_presets_count_bert_plus_the_visual_words():
    # BERT-large (335,141,888) plus 20,736 visual rows of width 1024.
    assert flops.count_params("videobert-large") == 335_141_888 + 20_736 * 1024
    assert flops.count_params("videobert-base") == 109_482_240 + 20_736 * 768


def test_from_bert_keeps_the_text_model():
    bert = BertBackbone(vocabulary_size=TEXT_VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32,
                        intermediate_dim=64, max_sequence_length=16, dropout=0.0)
    videobert = VideoBERTBackbone.from_bert(bert, visual_vocabulary_size=VISUAL_VOCABULARY)
    ids = np.array([[CLS, 7, 8, SEP]], "int32")
    inputs = {"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": np.ones_like(ids)}
    assert_close(videobert(inputs)["sequence_output"], bert(inputs)["sequence_output"], atol=1e-6)
    table = to_numpy(videobert.token_embedding.embeddings)
    assert table.shape == (24, 32) and np.abs(table[TEXT_VOCABULARY:]).max() > 0
    with pytest.raises(ValueError, match="bert_backbone"):
        VideoBERTBackbone.from_bert(videobert, visual_vocabulary_size=4)


# ---------------------------------------------------------------- pretraining
def test_masked_prediction_loss_falls_on_a_learnable_task(trained):
    pretrainer, before, history = trained
    assert history["mlm_loss"][-1] < 0.6 * before["mlm_loss"]
    assert history["mlm_accuracy"][-1] > 2 * before["mlm_accuracy"]


def test_alignment_head_learns_jointly_with_the_masked_losses(trained):
    pretrainer, before, history = trained
    assert before["alignment_accuracy"] < 0.6
    classes, visual, text = toy_videos(64, seed=1)  # held-out pairs
    examples = video_text_examples(text, visual, kinds=("joint",), pair_keys=classes, rng=1,
                                   **LAYOUT)
    probability = pretrainer.alignment_probabilities(examples)
    labels = examples["alignment_labels"]
    majority = max(labels.mean(), 1 - labels.mean())
    assert 0.5 <= majority < 0.7
    assert ((probability > 0.5) == labels).mean() > majority + 0.15


def test_dataset_reuses_bert_batching_and_adds_the_alignment_target():
    from keras_bigmodels.models.bert.data import BertPretrainingDataset

    classes, visual, text = toy_videos(64, seed=0)
    examples = video_text_examples(text, visual, pair_keys=classes, rng=0, **LAYOUT)
    data = VideoBERTPretrainingDataset(examples, batch_size=16, seed=0, **MASKING)
    assert isinstance(data, BertPretrainingDataset) and len(data) == 12
    x, y, weights = data[0]
    assert sorted(x) == ["mask_positions", "padding_mask", "segment_ids", "token_ids"]
    indices = data._order[:16]
    np.testing.assert_array_equal(y["alignment"], examples["alignment_labels"][indices])
    np.testing.assert_array_equal(weights["alignment"], examples["alignment_weights"][indices])
    mismatched = (weights["alignment"] > 0) & (y["alignment"] == 0)
    assert (weights["mlm"][mismatched] == 0).all()
    with pytest.raises(ValueError, match="alignment_labels"):
        VideoBERTPretrainingDataset({k: v for k, v in examples.items()
                                     if k != "alignment_labels"}, batch_size=16, **MASKING)


def test_zero_shot_and_masked_visual_prediction_beat_the_baselines(trained):
    pretrainer, _, _ = trained
    classes, visual, _ = toy_videos(64, seed=2)
    candidates = [6, 7, 8, 9]
    predictions, scores = zero_shot_classify(pretrainer, [MASK], candidates, visual,
                                             mask_token_id=MASK, **LAYOUT)
    assert predictions.shape == (64, 1) and scores.shape == (64, 1, 4)
    accuracy = (predictions[:, 0] == classes).mean()
    assert accuracy > 0.6  # chance: 1/4
    prior, _ = zero_shot_classify(pretrainer, [MASK], candidates, None, num_examples=64,
                                  mask_token_id=MASK, **LAYOUT)
    assert prior.shape == (64, 1) and len(set(prior[:, 0])) == 1  # video-blind: one answer
    assert accuracy > (prior[:, 0] == classes).mean() + 0.3
    result = evaluate_masked_visual_prediction(
        pretrainer, visual, text_vocabulary_size=TEXT_VOCABULARY, mask_token_id=MASK,
        mask_rate=0.2, **LAYOUT)
    assert result["count"] == 64
    # Neighbours always differ from the masked word here: copying scores 0, and every
    # masked word counts as changed.
    assert result["copy_neighbor_baseline"] == 0.0
    assert result["accuracy"] > result["most_frequent_baseline"] + 0.25
    assert result["changed"] == {k: result[k] for k in result if k != "changed"}
    twice = evaluate_masked_visual_prediction(
        pretrainer, visual, text_vocabulary_size=TEXT_VOCABULARY, mask_token_id=MASK,
        mask_rate=0.2, rounds=2, **LAYOUT)
    assert twice["count"] == 128
    # Words that never change: copying is always right, and no masked word is "changed".
    still = evaluate_masked_visual_prediction(
        pretrainer, np.full((8, 6), TEXT_VOCABULARY + 3), text_vocabulary_size=TEXT_VOCABULARY,
        mask_token_id=MASK, **LAYOUT)
    assert still["copy_neighbor_baseline"] == 1.0
    assert still["changed"]["count"] == 0 and still["changed"]["accuracy"] is None


def test_pretrainer_config_and_keras_round_trip(tmp_path):
    pretrainer = VideoBERTPretrainer(VideoBERTBackbone(**TINY))
    restored = assert_saved_model_matches(pretrainer, make_inputs(), tmp_path)
    assert isinstance(restored.backbone, VideoBERTBackbone)
    assert restored.backbone.visual_vocabulary_size == VISUAL_VOCABULARY
    clone = VideoBERTPretrainer.from_config(pretrainer.get_config())
    assert clone.backbone.get_config() == {**pretrainer.backbone.get_config(),
                                           "name": clone.backbone.name}


def test_bad_input_raises_a_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="visual_vocabulary_size"):
        VideoBERTBackbone(**{**TINY, "visual_vocabulary_size": 0})
    with pytest.raises(ValueError, match="backbone"):
        VideoBERTPretrainer(BertBackbone(vocabulary_size=24, num_layers=1, num_heads=2,
                                         hidden_dim=32, intermediate_dim=64))
    pretrainer = VideoBERTPretrainer(VideoBERTBackbone(**TINY))
    inputs = make_inputs()
    with pytest.raises(ValueError, match="mask_positions"):
        pretrainer({k: v for k, v in inputs.items() if k != "mask_positions"})
    bad = dict(inputs, token_ids=inputs["token_ids"] + 30)
    with pytest.raises(ValueError, match="token_ids"):
        pretrainer.predict(bad, verbose=0)
    with pytest.raises(ValueError, match="template_ids"):
        zero_shot_classify(pretrainer, [6, 7], [6, 7], None, mask_token_id=MASK, **LAYOUT)
    with pytest.raises(ValueError, match="alignment_weight"):
        pretrainer.compile(alignment_weight=-1.0)
    with pytest.raises(ValueError, match="candidate_ids"):
        zero_shot_classify(pretrainer, [MASK, MASK], [6, 7], None, mask_token_id=MASK, **LAYOUT)
