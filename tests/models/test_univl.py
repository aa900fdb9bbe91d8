import numpy as np
import pytest

import keras

from keras_bigmodels import flops
from keras_bigmodels.losses import frame_nce_loss, mil_nce_loss
from keras_bigmodels.models.univl import OBJECTIVES, UniVLBackbone, UniVLPretrainer
from keras_bigmodels.models.univl.config import univl_params
from keras_bigmodels.objectives.univl import caption_targets, mask_frames, univl_batch
from tests.testing import to_numpy

PAIRS, FRAMES, FEATURES = 16, 4, 12
SPECIAL = dict(vocabulary_size=5 + 2 * PAIRS, mask_token_id=4, start_token_id=2,
               end_token_id=3, special_token_ids=(0, 1, 2, 3, 4))


def make_backbone(**overrides):
    config = dict(vocabulary_size=SPECIAL["vocabulary_size"], video_feature_dim=FEATURES,
                  num_text_layers=1, num_video_layers=1, num_cross_layers=1,
                  num_decoder_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
                  max_sequence_length=8, max_frames=FRAMES, dropout=0.0)
    config.update(overrides)
    return UniVLBackbone(**config)


def pairs(seed=0):
    """A learnable set: pair i is the text `[CLS] a_i b_i [SEP]` and a video whose frames
    are prototype i plus noise, so each word and each video identifies the pair."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(PAIRS, FEATURES))
    frames = prototypes[:, None, :] + 0.3 * rng.normal(size=(PAIRS, FRAMES, FEATURES))
    index = np.arange(PAIRS)
    token_ids = np.stack([np.full(PAIRS, 2), 5 + index, 5 + PAIRS + index, np.full(PAIRS, 3)],
                         axis=1)
    return token_ids.astype("int32"), np.ones_like(token_ids), frames.astype("float32")


def batch(seed=0, **kwargs):
    token_ids, padding_mask, frames = pairs()
    return univl_batch(token_ids, padding_mask, frames, None, rng=seed, **SPECIAL, **kwargs)


def recall_at_1(task):
    token_ids, padding_mask, frames = pairs()
    scores = task.text_embeddings(token_ids, padding_mask) @ task.video_embeddings(frames).T
    return float(np.mean(scores.argmax(axis=1) == np.arange(PAIRS)))


@pytest.fixture(scope="module")
def trained():
    """Stage one (the joint loss), then all five objectives with enhanced video."""
    keras.utils.set_random_seed(0)
    task = UniVLPretrainer(make_backbone(), objectives="joint")
    task.compile(learning_rate=3e-3)
    untrained_recall = recall_at_1(task)
    stage_one = task.fit(batch(0), batch_size=PAIRS, epochs=15, verbose=0).history
    task.set_objectives("all")
    # Fresh masks each round, as the guide's batches draw them.
    stage_two = {}
    for round_index in range(4):
        history = task.fit(batch(round_index, whole_text_mask_rate=0.15), batch_size=PAIRS,
                           epochs=10, verbose=0).history
        for key, values in history.items():
            stage_two.setdefault(key, []).extend(values)
    return task, stage_one, stage_two, untrained_recall


def test_each_loss_falls_and_retrieval_beats_chance(trained):
    task, stage_one, stage_two, untrained_recall = trained
    assert set(stage_one) == {"loss", "joint_loss"}
    assert stage_one["joint_loss"][-1] < 0.7 * stage_one["joint_loss"][0]
    assert set(stage_two) == {"loss"} | {f"{name}_loss" for name in OBJECTIVES}
    # (The alignment loss sits at log(16), every pair scored alike, for its first ~10
    # steps: its head starts near zero.)
    for name in OBJECTIVES[1:]:
        values = stage_two[f"{name}_loss"]
        assert np.mean(values[-5:]) < np.mean(values[:5]) - 0.15, (name, values)
    # The joint loss, learnt in stage one, stays learnt while the others train.
    assert max(stage_two["joint_loss"]) < 0.5 * stage_one["joint_loss"][0]
    # Chance is 1/16 for text -> video over the 16 pairs.
    recall = recall_at_1(task)
    assert recall >= 0.5 > untrained_recall, (recall, untrained_recall)


def test_alignment_scores_rank_own_video(trained):
    task = trained[0]
    token_ids, padding_mask, frames = pairs()
    scores = task.alignment_scores(token_ids, padding_mask, frames)
    assert scores.shape == (PAIRS, PAIRS)
    # The own video's rank among the 16 (0: first); 7.5 on average by chance. The fixture
    # trains alignment only ~30 steps past its plateau, so the bar is the mean rank.
    ranks = (scores > np.diag(scores)[:, None]).sum(axis=1)
    assert ranks.mean() < 5.0, ranks


def test_captions_decode_greedily_with_the_cache(trained):
    """generate() equals an uncached argmax over the teacher-forced decoder, and writes the
    pair's words after training (the text is masked whole, so they come from video)."""
    task = trained[0]
    token_ids, padding_mask, frames = pairs()
    masked = np.where(np.isin(token_ids, [2, 3]), token_ids, 4)
    captions = task.generate(frames, token_ids=masked, padding_mask=padding_mask,
                             max_new_tokens=4)
    assert len(captions) == PAIRS and all(isinstance(c, list) for c in captions)
    for i, caption in enumerate(captions[:4]):
        ids = [2] + caption + ([3] if len(caption) < 4 else [])
        sequence, mask = task.backbone.encode(masked[i:i + 1], padding_mask[i:i + 1],
                                              frames[i:i + 1], np.ones((1, FRAMES), "int32"))
        hidden = task.backbone.decode(np.array([ids[:-1]]), np.ones((1, len(ids) - 1)),
                                      sequence, mask)
        expected = to_numpy(task.logits_from_hidden(hidden))[0].argmax(-1)
        np.testing.assert_array_equal(expected, ids[1:])
    right = np.mean([c[:2] == list(token_ids[i, 1:3]) for i, c in enumerate(captions)])
    assert right >= 0.5, captions
    # A caption of the empty text decodes too (ids in the vocabulary).
    empty = task.generate(frames[:2], max_new_tokens=3, sampler="beam", num_beams=2)
    assert all(0 <= t < SPECIAL["vocabulary_size"] for c in empty for t in c)


def test_staged_training_sums_only_enabled_losses(trained):
    task, stage_one, _, _ = trained
    # Stage one (fit in the fixture) reported and summed the joint loss alone.
    np.testing.assert_allclose(stage_one["loss"], stage_one["joint_loss"], rtol=1e-5)
    task = UniVLPretrainer(make_backbone(), objectives=["caption", "mlm"],
                           alignment_negatives=3)
    assert task.objectives == ("mlm", "caption")  # the paper's order
    assert [m.name for m in task.metrics][-2:] == ["mlm_loss", "caption_loss"]
    data = batch(0)
    losses = task(data)
    assert set(losses) == {"mlm", "caption"}
    np.testing.assert_allclose(to_numpy(task.compute_loss(data, None, losses)),
                               float(losses["mlm"]) + float(losses["caption"]), rtol=1e-5)
    task.set_objectives("joint")
    assert task.train_function is None
    assert [m.name for m in task.metrics][-1] == "joint_loss"
    # Stage one needs only the clean text and frames.
    clean = {k: data[k] for k in ("token_ids", "padding_mask", "frames", "frame_mask")}
    assert set(task(clean)) == {"joint"}
    task.set_objectives("all")
    assert set(task(data)) == set(OBJECTIVES)


def test_alignment_negatives_limit_the_candidates():
    """k negatives give a softmax over k + 1 videos: log(k + 1) at a constant score."""
    task = UniVLPretrainer(make_backbone(), objectives="alignment", alignment_negatives=3)
    data = batch(0)
    logits, labels = task._alignment_logits(
        task.backbone.encode_text(data["masked_token_ids"], data["padding_mask"]),
        data["padding_mask"],
        task.backbone.encode_video(data["masked_frames"], data["frame_mask"]),
        data["frame_mask"])
    assert tuple(logits.shape) == (PAIRS, 4)
    # Candidate s of text i is video i + s: its score equals the all-pairs score.
    full = task.alignment_scores(data["masked_token_ids"], data["padding_mask"],
                                 data["masked_frames"])
    shifted = np.stack([full[np.arange(PAIRS), (np.arange(PAIRS) + s) % PAIRS]
                        for s in range(4)], axis=1)
    np.testing.assert_allclose(to_numpy(logits), shifted, atol=1e-4)
    assert np.all(to_numpy(labels) == 0)


def test_get_config_round_trip(tmp_path):
    task = UniVLPretrainer(make_backbone(), objectives=["joint", "frame"],
                           alignment_negatives=2, decoder_start_token_id=2, eos_token_id=3)
    data = batch(0)
    expected = {k: float(v) for k, v in task(data).items()}
    backbone = UniVLBackbone.from_config(task.backbone.get_config())
    assert backbone.get_config() == task.backbone.get_config()
    clone = UniVLPretrainer.from_config(task.get_config())
    assert clone.objectives == ("joint", "frame") and clone.alignment_negatives == 2
    clone.set_weights(task.get_weights())
    actual = {k: float(v) for k, v in clone(data).items()}
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5)
    path = str(tmp_path / "univl.keras")
    task.save(path)
    restored = keras.saving.load_model(path)
    for key, value in restored(data).items():
        np.testing.assert_allclose(float(value), expected[key], rtol=1e-5)


def test_from_text_encoder_copies_bert():
    from keras_bigmodels.models.bert import BertBackbone

    bert = BertBackbone(vocabulary_size=SPECIAL["vocabulary_size"], num_layers=1, num_heads=2,
                        hidden_dim=32, intermediate_dim=64, max_sequence_length=8, dropout=0.0)
    backbone = UniVLBackbone.from_text_encoder(bert, video_feature_dim=FEATURES,
                                               num_video_layers=1, num_cross_layers=1,
                                               num_decoder_layers=1, max_frames=FRAMES,
                                               dropout=0.0)
    assert backbone.num_text_layers == 1 and backbone.hidden_dim == 32
    token_ids, padding_mask, _ = pairs()
    expected = bert({"token_ids": token_ids, "segment_ids": 0 * token_ids,
                     "padding_mask": padding_mask})["sequence_output"]
    np.testing.assert_allclose(to_numpy(backbone.encode_text(token_ids, padding_mask)),
                               to_numpy(expected), atol=1e-5)
    with pytest.raises(ValueError, match="`text_encoder`"):
        UniVLBackbone.from_text_encoder(make_backbone(), video_feature_dim=FEATURES)


def test_param_count_is_analytic():
    config = dict(vocabulary_size=40, video_feature_dim=12, num_text_layers=2,
                  num_video_layers=1, num_cross_layers=1, num_decoder_layers=2, num_heads=2,
                  hidden_dim=32, intermediate_dim=48, max_sequence_length=8, max_frames=6)
    assert UniVLBackbone(**config).count_params() == univl_params(config)
    assert flops.count_params({**config, "family": "univl"}) == univl_params(config)


def test_preset_count_equals_transformers_modules():
    # The paper's UniVL counted from transformers' BERT modules on the meta device (no
    # memory): BERT-base (bert-base-uncased, pooler included) as the text encoder; the
    # video encoder a frame Linear, 512 positions, a LayerNorm and 6 BertLayers; the
    # cross encoder 1024 positions, 2 type rows, a LayerNorm, 2 BertLayers and a pooler;
    # the decoder 512 positions, a LayerNorm and 3 BertLayers with cross-attention.
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel
    from transformers.models.bert.modeling_bert import BertLayer, BertPooler

    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        bert = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072,
                          max_position_embeddings=512, type_vocab_size=2)
        decoder_config = BertConfig(is_decoder=True, add_cross_attention=True)
        layer, decoder_layer = count(BertLayer(bert)), count(BertLayer(decoder_config))
        text = count(BertModel(bert))
        frame_projection = count(torch.nn.Linear(1024, 768))
        norm, pooler = count(torch.nn.LayerNorm(768)), count(BertPooler(bert))
    assert text == 109_482_240  # bert-base-uncased
    video = frame_projection + 512 * 768 + norm + 6 * layer
    cross = (1024 + 2) * 768 + norm + 2 * layer + pooler
    decoder = 512 * 768 + norm + 3 * decoder_layer
    assert flops.count_params("univl-base") == text + video + cross + decoder == 197_497_344
    # The reference code's backbone: + a video pooler, + a LayerNorm on the 1024-dim
    # features, - the decoder's positions (it reads BERT's): 197,696,768.
    assert text + video + cross + decoder + pooler + 2 * 1024 - 512 * 768 == 197_696_768
    backbone = UniVLBackbone.from_preset("univl-base", num_text_layers=1, num_video_layers=1,
                                         num_cross_layers=1, num_decoder_layers=1)
    assert (backbone.video_feature_dim, backbone.hidden_dim, backbone.max_frames) == (
        1024, 768, 512)


def test_flops_count_each_kernel_on_the_tokens_it_sees():
    # Independent of the analytic counter: the built backbone's kernels, each times the
    # tokens it multiplies, plus the caption's tied output layer and the attention
    # products (12 L d T K: forward and backward, T queries over K keys).
    backbone = make_backbone(num_text_layers=2, num_decoder_layers=2)
    text, frames, hidden = 6, 3, 32
    joint = text + frames
    expected = 0
    for weight in backbone.weights:
        path = weight.path
        if not path.endswith("kernel"):
            continue
        if "pooler" in path:
            tokens = 1
        elif path.startswith(("frame_projection", "video_layer")):
            tokens = frames
        elif path.startswith("cross_layer"):
            tokens = joint
        elif "cross_attention/key" in path or "cross_attention/value" in path:
            tokens = joint  # the decoder's keys and values come from the cross encoder
        else:  # the text encoder's and the decoder's other kernels
            tokens = text
        expected += 6 * int(np.prod(weight.shape)) * tokens
    expected += 6 * SPECIAL["vocabulary_size"] * hidden * text  # tied caption output layer
    expected += 12 * hidden * (2 * text * text + 1 * frames * frames + 1 * joint * joint
                               + 2 * text * text + 2 * text * joint)
    config = {**backbone.get_config(), "family": "univl"}
    assert flops.flops_per_example(config, (text, frames)) == expected
    assert flops.flops_per_token(config, (text, frames)) == expected / (2 * text + frames)
    assert flops.flops_per_example(config, 3) == flops.flops_per_example(config, (3, 3))
    for bad in ((9, 2), (4, 5), 0, "48"):  # max_sequence_length 8, max_frames 4
        with pytest.raises(ValueError, match="sequence_length"):
            flops.flops_per_token(config, bad)
    # The paper's pretraining lengths (48 words, 64 frames); summed by hand: ~67.7 GFLOP.
    assert flops.flops_per_example("univl-base", (48, 64)) == pytest.approx(67.78e9, rel=1e-3)


def test_bad_inputs_raise_naming_the_argument():
    task = UniVLPretrainer(make_backbone(), objectives="all")
    data = batch(0)
    with pytest.raises(ValueError, match="decoder_target_ids"):
        task({k: v for k, v in data.items() if k != "decoder_target_ids"})
    with pytest.raises(ValueError, match="`frames`"):
        task({**data, "frames": data["frames"][:, :, :5]})
    backbone = task.backbone
    ids = np.array([[2, 7, 3]], "int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids),
              "frames": np.zeros((1, FRAMES, FEATURES), "float32"),
              "frame_mask": np.ones((1, FRAMES), "int32"), "decoder_token_ids": ids,
              "decoder_padding_mask": np.ones_like(ids)}
    vocabulary = SPECIAL["vocabulary_size"]
    with pytest.raises(ValueError, match=f"`decoder_token_ids` holds id {vocabulary}"):
        backbone({**inputs, "decoder_token_ids": np.array([[2, vocabulary, 3]], "int32")})
    with pytest.raises(ValueError, match="`token_ids` holds id -1"):
        backbone({**inputs, "token_ids": np.array([[2, -1, 3]], "int32")})
    with pytest.raises(ValueError, match="`frame_mask`"):
        backbone({**inputs, "frame_mask": np.ones((1, FRAMES + 1), "int32")})
    with pytest.raises(ValueError, match="`decoder_padding_mask`"):
        backbone({**inputs, "decoder_padding_mask": np.ones((1, 2), "int32")})
    with pytest.raises(ValueError, match=f"`frames` must be \\[batch, frames, {FEATURES}\\]"):
        backbone.encode_video(np.zeros((1, FRAMES, 5), "float32"), np.ones((1, FRAMES)))
    with pytest.raises(ValueError, match="`token_ids`"):
        backbone.encode_text(np.array([[2, vocabulary]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="`objectives`"):
        UniVLPretrainer(make_backbone(), objectives=["joint", "contrastive"])
    with pytest.raises(ValueError, match="`alignment_negatives`"):
        UniVLPretrainer(make_backbone(), alignment_negatives=0)
    with pytest.raises(ValueError, match="`backbone`"):
        UniVLPretrainer(backbone=None)
    with pytest.raises(ValueError, match="`num_heads`"):
        make_backbone(hidden_dim=31)
    with pytest.raises(ValueError, match="`token_ids`"):
        task.fit({**data, "token_ids": data["token_ids"] + 100}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`frames`"):
        task.generate(np.zeros((2, FRAMES, 3)))
    with pytest.raises(ValueError, match="max_new_tokens"):
        task.generate(np.zeros((2, FRAMES, FEATURES)), max_new_tokens=8)
    with pytest.raises(ValueError, match="`loss`"):
        task.compile(loss="mse")
    with pytest.raises(ValueError, match="`whole_text_mask_rate`"):
        batch(0, whole_text_mask_rate=1.5)


def test_univl_batch_masks():
    token_ids, padding_mask, frames = pairs()
    out = batch(1, whole_text_mask_rate=1.0)
    # Whole text masked: every word is [MASK], [CLS]/[SEP] stay.
    np.testing.assert_array_equal(out["masked_token_ids"][:, 1:3], 4)
    np.testing.assert_array_equal(out["masked_token_ids"][:, [0, 3]], token_ids[:, [0, 3]])
    np.testing.assert_array_equal(out["mask_ids"][np.arange(PAIRS), 0],
                                  token_ids[np.arange(PAIRS), out["mask_positions"][:, 0]])
    # One of 4 frames masked per video (15%, at least one), zeroed.
    np.testing.assert_array_equal(out["frame_target_weights"].sum(axis=1), 1)
    zeroed = np.all(out["masked_frames"] == 0, axis=-1)
    np.testing.assert_array_equal(zeroed, out["frame_target_weights"] > 0)
    frame_out = mask_frames(frames, np.array([[1, 1, 0, 0]] * PAIRS), mask_rate=0.5, rng=0)
    assert frame_out["frame_target_weights"][:, 2:].sum() == 0
    targets = caption_targets(np.array([[2, 7, 8, 3, 0]]), np.array([[1, 1, 1, 1, 0]]), 2, 3)
    np.testing.assert_array_equal(targets["decoder_token_ids"], [[2, 7, 8, 0]])
    np.testing.assert_array_equal(targets["decoder_target_ids"], [[7, 8, 3, 0]])
    np.testing.assert_array_equal(targets["decoder_padding_mask"], [[1, 1, 1, 0]])
    with pytest.raises(ValueError, match="start"):
        caption_targets(np.array([[7, 8, 3]]), np.ones((1, 3)), 2, 3)


def mil_nce_reference(similarity, positives):
    losses = []
    for j in range(len(similarity)):
        numerator = np.exp(similarity[positives[:, j] > 0, j]).sum()
        denominator = np.exp(similarity[:, j]).sum() + np.exp(
            similarity[j, positives[j] == 0]).sum()
        losses.append(-np.log(numerator / denominator))
    return np.mean(losses)


def test_losses_match_numpy():
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(5, 5)).astype("float32") * 2
    np.testing.assert_allclose(to_numpy(mil_nce_loss(similarity)),
                               mil_nce_reference(similarity, np.eye(5)), rtol=1e-5)
    positives = np.eye(5)
    positives[0, 1] = positives[1, 0] = 1  # two captions of one video, say
    np.testing.assert_allclose(to_numpy(mil_nce_loss(similarity, positives)),
                               mil_nce_reference(similarity, positives), rtol=1e-5)

    predicted = rng.normal(size=(2, 3, 4)).astype("float32")
    frames = rng.normal(size=(2, 3, 4)).astype("float32")
    valid = np.array([[1, 1, 0], [1, 1, 1]])
    weights = np.array([[1, 0, 0], [0, 1, 1]])
    logits = predicted.reshape(6, 4) @ frames.reshape(6, 4).T
    logits[:, valid.reshape(-1) == 0] = -1e9  # padding frames are never candidates
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(
        1, keepdims=True)) - logits.max(1, keepdims=True)
    expected = -(np.diag(log_probs) * weights.reshape(-1)).sum() / weights.sum()
    np.testing.assert_allclose(to_numpy(frame_nce_loss(predicted, frames, valid, weights)),
                               expected, rtol=1e-5)
    assert float(to_numpy(frame_nce_loss(predicted, frames, valid, 0 * weights))) == 0.0
