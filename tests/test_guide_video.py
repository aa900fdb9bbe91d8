import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guides"))


@pytest.mark.one_backend("torch")  # see tests/conftest.py
def test_video_text_guide_tiny_beats_the_baselines(tmp_path):
    import video_text

    results = video_text.main(["--tiny", "--output", str(tmp_path)])
    with open(tmp_path / "video_text.json") as f:
        stored = json.load(f)
    assert stored["univl"]["retrieval"] == results["univl"]["retrieval"]

    retrieval = results["univl"]["retrieval"]
    assert retrieval["recall_at_1"] > retrieval["chance_recall_at_1"] + 0.1
    assert retrieval["recall_at_5"] > retrieval["chance_recall_at_5"] + 0.2
    captions = results["univl"]["captions"]
    assert captions["accuracy"] > captions["most_frequent_caption_accuracy"] + 0.05
    # The paper's stages: the joint loss alone, then all five, then captioning.
    history = results["univl"]["history"]
    assert set(history["joint"]) == {"loss", "joint_loss"}
    assert {"mlm_loss", "frame_loss", "alignment_loss", "caption_loss"} <= set(history["all"])
    assert set(history["caption"]) == {"loss", "caption_loss"}
    for stage in ("joint", "caption"):
        assert history[stage]["loss"][-1] < history[stage]["loss"][0]

    masked = results["videobert"]["masked_visual_words"]
    assert masked["count"] > 0
    assert masked["accuracy"] > masked["most_frequent_baseline"] + 0.1
    # The words change along a video (position is part of them), so copying a neighbour
    # is not always right, and the changed words are counted apart.
    assert masked["copy_neighbor_baseline"] < 0.95
    assert 0 <= masked["changed"]["count"] < masked["count"]
    assert results["videobert"]["neighbouring_frames_share_their_word"] < 0.95
    alignment = results["videobert"]["alignment"]
    assert alignment["count"] == 80 and 0.5 <= alignment["majority_baseline"] < 0.7
    assert "zero_shot" in results["videobert"]


def test_frame_features_see_shape_and_position():
    """|FFT| ignores where the digit is; the centroid says where it is, its change where
    it goes."""
    import video_text

    frames = np.zeros((1, 2, 32, 32, 1), "float32")
    frames[0, 0, 4:12, 4:8] = 1.0
    frames[0, 1, 10:18, 20:24] = 1.0  # the same bar, moved down and right
    features = video_text.frame_features(frames)
    shape_part, position, motion = (features[..., :-32], features[..., -32:-16],
                                    features[..., -16:])
    np.testing.assert_allclose(shape_part[0, 0], shape_part[0, 1], atol=1e-5)
    assert position[0, 1, 0] > position[0, 0, 0]  # lower
    assert position[0, 1, -1] > position[0, 0, -1]  # further right
    assert np.all(motion[0, :, 0] > 0) and np.all(motion[0, :, -1] > 0)  # down, right


def test_visual_word_features_see_the_digit_wherever_it_is():
    import video_text

    frames = np.zeros((1, 2, 32, 32, 1), "float32")
    frames[0, 0, 4:12, 4:8] = 1.0
    frames[0, 1, 10:18, 20:24] = 1.0  # the same bar, moved down and right
    crops, centroid = video_text.digit_crops(frames)
    np.testing.assert_array_equal(crops[0, 0], crops[0, 1])
    assert crops[0, 0].sum() == 32  # the whole 8 x 4 bar is inside the window
    assert (centroid[0, 1] > centroid[0, 0]).all()
    features = video_text.visual_word_features({"train": frames}, components=1)
    assert features["train"].shape == (1, 2, 5)
    assert features["train"][0, 0, 0] == features["train"][0, 1, 0]  # same appearance


def test_retrieval_counts_hits_and_chance():
    import video_text

    texts = np.eye(3)
    videos = np.eye(3)[[1, 0, 2]]  # text i is closest to video order[i]
    keys = ["a", "b", "c"]
    result = video_text.retrieval(texts, videos, keys, ["b", "a", "c"])
    assert result["recall_at_1"] == 1.0 and result["chance_recall_at_1"] == pytest.approx(1 / 3)
    result = video_text.retrieval(texts, videos, keys, keys)
    assert result["recall_at_1"] == pytest.approx(1 / 3)


def test_video_text_guide_arguments(capsys):
    import video_text

    assert video_text.parse_args(["--tiny", "--all-epochs", "3"]).all_epochs == 3
    for flag in (["--width", "40"], ["--parts", "univl,clip"], ["--frames", "1"],
                 ["--joint-epochs", "0"]):
        with pytest.raises(SystemExit):
            video_text.parse_args(flag)
        assert flag[0] in capsys.readouterr().err
