import numpy as np
import pytest

from keras_bigmodels.objectives import video_text

LAYOUT = dict(cls_token_id=2, sep_token_id=3, bridge_token_id=5, pad_token_id=0,
              max_text_length=3, max_visual_length=4)
TEXT_VOCABULARY, VISUAL_VOCABULARY = 20, 10  # visual ids 20..29


def test_pack_joint_text_only_and_video_only_layouts():
    joint = video_text.pack_video_text([[7, 8]], [[20, 21, 22]], **LAYOUT)
    assert joint["token_ids"][0].tolist() == [2, 7, 8, 5, 20, 21, 22, 3, 0, 0]
    assert joint["segment_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert joint["padding_mask"][0].tolist() == [1] * 8 + [0, 0]
    text = video_text.pack_video_text([[7, 8, 9, 10]], None, **LAYOUT)  # truncated to 3
    assert text["token_ids"][0].tolist() == [2, 7, 8, 9, 3, 0, 0, 0, 0, 0]
    assert text["segment_ids"][0].sum() == 0
    video = video_text.pack_video_text(None, np.array([[20, 21, 22, 23, 24]]),
                                       visual_mask=np.array([[1, 1, 0, 1, 1]], bool), **LAYOUT)
    assert video["token_ids"][0].tolist() == [2, 20, 21, 23, 24, 3, 0, 0, 0, 0]
    assert video["segment_ids"][0].tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="text_ids"):
        video_text.pack_video_text([[7]], [[20], [21]], **LAYOUT)
    with pytest.raises(ValueError, match="max_text_length"):
        video_text.pack_video_text([[7]], None, **{**LAYOUT, "max_text_length": 0})


def test_examples_of_every_kind_with_mismatched_pairs():
    rng = np.random.default_rng(0)
    keys = np.arange(40) % 4
    texts = [[6 + int(k)] for k in keys]
    videos = TEXT_VOCABULARY + np.repeat(keys[:, None], 4, axis=1)
    examples = video_text.video_text_examples(texts, videos, pair_keys=keys, rng=1, **LAYOUT)
    kinds = examples["example_kind"]
    assert len(kinds) == 120 and (np.bincount(kinds) == 40).all()
    joint = kinds == video_text.JOINT
    assert (examples["alignment_weights"] == joint).all()
    labels = examples["alignment_labels"][joint]
    assert 0.3 < labels.mean() < 0.7  # negative_rate 0.5
    word = examples["token_ids"][joint, 1] - 6
    shown = examples["token_ids"][joint, 3] - TEXT_VOCABULARY
    # A positive pair shows its own video; a negative one a video of another key.
    assert ((word == shown) == (labels == 1)).all()
    assert (examples["token_ids"][kinds == video_text.TEXT_ONLY] >= TEXT_VOCABULARY).sum() == 0
    assert (examples["token_ids"][kinds == video_text.VIDEO_ONLY, 1] >= TEXT_VOCABULARY).all()
    again = video_text.video_text_examples(texts, videos, pair_keys=keys, rng=1, **LAYOUT)
    np.testing.assert_array_equal(again["token_ids"], examples["token_ids"])
    with pytest.raises(ValueError, match="kinds"):
        video_text.video_text_examples(texts, videos, kinds=("audio",), **LAYOUT)
    with pytest.raises(ValueError, match="pair_keys"):
        video_text.video_text_examples(texts, videos, pair_keys=keys[:3], **LAYOUT)
    del rng


def test_masking_keeps_random_replacements_in_their_modality():
    texts = [[6, 7, 8]] * 400
    videos = TEXT_VOCABULARY + np.tile(np.arange(4), (400, 1))
    examples = video_text.video_text_examples(texts, videos, kinds=("joint",), rng=0, **LAYOUT)
    specials = (0, 1, 2, 3, 5)
    out = video_text.mask_video_text(examples["token_ids"], TEXT_VOCABULARY, VISUAL_VOCABULARY,
                                     mask_token_id=4, special_token_ids=specials,
                                     mask_token_rate=0.0, random_token_rate=1.0, rng=0)
    original, corrupted = examples["token_ids"], out["token_ids"]
    changed = original != corrupted
    assert changed.sum() > 200
    # Every replacement stays on the side it came from, never a special id.
    assert ((original[changed] >= TEXT_VOCABULARY) == (corrupted[changed] >= TEXT_VOCABULARY)).all()
    assert not np.isin(corrupted[changed], specials + (4,)).any()
    assert (corrupted < TEXT_VOCABULARY + VISUAL_VOCABULARY).all()
    visual = out["mask_is_visual"]
    assert (visual == ((out["mask_weights"] > 0) & (out["mask_ids"] >= TEXT_VOCABULARY))).all()
    assert 0.3 < visual[out["mask_weights"] > 0].mean() < 0.8  # 4 of 7 maskable are visual
    with pytest.raises(ValueError, match="token_ids"):
        video_text.mask_video_text(original + 100, TEXT_VOCABULARY, VISUAL_VOCABULARY, 4)


def test_dynamic_masks_change_per_epoch_and_repeat_per_seed():
    examples = video_text.video_text_examples([[6, 7, 8]] * 8, TEXT_VOCABULARY + np.zeros((8, 4), int),
                                              rng=0, **LAYOUT)
    kwargs = dict(text_vocabulary_size=TEXT_VOCABULARY, visual_vocabulary_size=VISUAL_VOCABULARY,
                  mask_token_id=4, special_token_ids=(0, 1, 2, 3, 5))
    masking = video_text.VideoTextMasking(examples, seed=3, **kwargs)
    first, second = masking.batch(np.arange(24), epoch=0), masking.batch(np.arange(24), epoch=1)
    assert not np.array_equal(first["mask_positions"], second["mask_positions"])
    again = video_text.VideoTextMasking(examples, seed=3, **kwargs).batch(np.arange(24), epoch=0)
    np.testing.assert_array_equal(again["token_ids"], first["token_ids"])


def test_rates_per_modality_mask_each_side_at_its_own_rate():
    texts = [[6, 7, 8]] * 200
    videos = TEXT_VOCABULARY + np.tile(np.arange(4), (200, 1))
    examples = video_text.video_text_examples(texts, videos, kinds=("joint",),
                                              negative_rate=0.0, rng=0, **LAYOUT)
    out = video_text.mask_video_text(examples["token_ids"], TEXT_VOCABULARY, VISUAL_VOCABULARY,
                                     mask_token_id=4, special_token_ids=(0, 1, 2, 3, 5),
                                     text_mask_rate=1.0, visual_mask_rate=0.25, rng=0)
    weights = out["mask_weights"] > 0
    # Every row: its 3 words and round(4 * 0.25) = 1 visual word, in position order.
    assert (weights.sum(1) == 4).all()
    assert (out["mask_is_visual"].sum(1) == 1).all()
    assert weights[:, :4].all()  # real predictions first, in position order
    assert (np.diff(out["mask_positions"][:, :4], axis=1) > 0).all()
    rows = np.arange(200)[:, None]
    np.testing.assert_array_equal(out["mask_ids"][weights],
                                  examples["token_ids"][rows, out["mask_positions"]][weights])
    assert (out["mask_ids"][:, :3] < TEXT_VOCABULARY).all()
    # One rate alone is the old single draw: about 15% of the 7 tokens, 1 per row.
    single = video_text.mask_video_text(examples["token_ids"], TEXT_VOCABULARY,
                                        VISUAL_VOCABULARY, mask_token_id=4,
                                        special_token_ids=(0, 1, 2, 3, 5), rng=0)
    assert ((single["mask_weights"] > 0).sum(1) == 1).all()
    with pytest.raises(ValueError, match="text_mask_rate"):
        video_text.mask_video_text(examples["token_ids"], TEXT_VOCABULARY, VISUAL_VOCABULARY,
                                   mask_token_id=4, text_mask_rate=1.5)


def test_mismatched_pairs_are_corrupted_but_predict_nothing():
    keys = np.arange(64) % 4
    texts = [[6 + int(k)] for k in keys]
    videos = TEXT_VOCABULARY + np.repeat(keys[:, None], 4, axis=1)
    examples = video_text.video_text_examples(texts, videos, kinds=("joint",), pair_keys=keys,
                                              rng=0, **LAYOUT)
    kwargs = dict(text_vocabulary_size=TEXT_VOCABULARY, visual_vocabulary_size=VISUAL_VOCABULARY,
                  mask_token_id=4, special_token_ids=(0, 1, 2, 3, 5), mask_rate=0.5)
    mismatched = examples["alignment_labels"] == 0
    assert 10 < mismatched.sum() < 54
    batch = video_text.VideoTextMasking(examples, seed=0, **kwargs).batch(np.arange(64))
    assert (batch["mask_weights"][mismatched] == 0).all()
    assert (batch["mask_weights"][~mismatched].sum(1) > 0).all()
    # Corrupted all the same: a row left whole would give its alignment label away.
    changed = (batch["token_ids"] != examples["token_ids"]).any(1)
    assert changed[mismatched].mean() > 0.5 and changed[~mismatched].mean() > 0.5
    both = video_text.VideoTextMasking(examples, seed=0, mask_mismatched=True, **kwargs)
    assert (both.batch(np.arange(64))["mask_weights"][mismatched].sum(1) > 0).all()
