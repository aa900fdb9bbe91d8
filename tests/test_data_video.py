import numpy as np
import pytest

from keras_bigmodels import data
from keras_bigmodels.data import video


def _center_of_mass(frame):
    """(row, column) of the intensity-weighted mean of a [H, W, C] frame."""
    weight = frame.sum(-1)
    rows, columns = np.indices(weight.shape)
    return np.array([(rows * weight).sum(), (columns * weight).sum()]) / weight.sum()


def test_moving_digits_shapes_ranges_and_captions():
    videos = data.load_moving_digits(num_train=12, num_test=5, num_frames=10, canvas_size=28,
                                     digit_size=8, channels=3, seed=1)
    assert videos["frames_train"].shape == (12, 10, 28, 28, 3)
    assert videos["frames_test"].shape == (5, 10, 28, 28, 3)
    assert videos["frames_train"].dtype == np.float32
    assert videos["frames_train"].min() >= 0.0 and videos["frames_train"].max() <= 1.0
    assert videos["positions_train"].shape == (12, 10, 2)
    for split in ("train", "test"):
        for caption, digit, direction in zip(videos[f"captions_{split}"], videos[f"digits_{split}"],
                                             videos[f"directions_{split}"]):
            assert data.DIGIT_NAMES[digit] in caption.split()
            assert videos["direction_names"][direction] in caption.split()
    # Several templates are in use.
    assert len({c.split()[1] if c.startswith("the") else c.split()[2] for c in videos["captions_train"]}) > 1


def test_moving_digits_is_deterministic_per_seed():
    first = data.load_moving_digits(num_train=6, num_test=2, seed=3)
    again = data.load_moving_digits(num_train=6, num_test=2, seed=3)
    other = data.load_moving_digits(num_train=6, num_test=2, seed=4)
    np.testing.assert_array_equal(first["frames_train"], again["frames_train"])
    assert first["captions_train"] == again["captions_train"]
    assert not np.array_equal(first["frames_train"], other["frames_train"])


@pytest.mark.parametrize("distractor", [False, True])
def test_motion_goes_in_the_stated_direction(distractor):
    directions = video.ALL_DIRECTIONS
    videos = data.load_moving_digits(num_train=80, num_test=1, num_frames=8, canvas_size=32,
                                     directions=directions, distractor=distractor, seed=0)
    seen = set()
    for frames, direction, positions in zip(videos["frames_train"], videos["directions_train"],
                                            videos["positions_train"]):
        name = videos["direction_names"][direction]
        seen.add(name)
        expected = np.sign(video.DIRECTION_STEPS[name])
        # The image of the last frame minus the first: the moving digit's mass goes from
        # its start to its end; a still distractor cancels out.
        moved = _center_of_mass(frames[-1]) - _center_of_mass(frames[0])
        for axis in range(2):
            # Where the moving digit overlaps the distractor the maximum hides some ink, so
            # a still axis may drift a little; a moving axis moves by several pixels.
            if expected[axis] == 0:
                assert abs(moved[axis]) < 0.5, (name, moved)
            else:
                assert moved[axis] * expected[axis] > 2.0, (name, moved)
        # Exactly speed * (frames - 1) pixels along each moving axis.
        travel = (positions[-1] - positions[0]) * expected
        assert (travel == videos["speed"] * 7 * np.abs(expected)).all(), (name, positions)
    assert seen == set(directions)


def test_distractor_is_another_digit_and_stays_still():
    plain = data.load_moving_digits(num_train=10, num_test=1, seed=2)
    busy = data.load_moving_digits(num_train=10, num_test=1, distractor=True, seed=2)
    # The distractor adds ink that is present in every frame at the same place.
    assert busy["frames_train"].sum() > plain["frames_train"].sum()
    still = np.min(busy["frames_train"], axis=1).sum(axis=(1, 2, 3))
    assert (still > 1.0).all()


def test_train_and_test_use_disjoint_digit_images():
    digits = data.load_digits(test_fraction=0.2, seed=5)
    videos = data.load_moving_digits(num_train=40, num_test=40, seed=5)

    def crops(split):
        out = []
        for frames, position in zip(videos[f"frames_{split}"], videos[f"positions_{split}"]):
            row, column = position[0]
            out.append(frames[0, row:row + 8, column:column + 8].round(4).tobytes())
        return out

    train_images = {x.round(4).tobytes() for x in digits["x_train"]}
    test_images = {x.round(4).tobytes() for x in digits["x_test"]}
    assert all(c in train_images for c in crops("train"))
    assert all(c in test_images for c in crops("test"))


def test_moving_digits_bad_arguments():
    with pytest.raises(ValueError, match="directions"):
        data.load_moving_digits(directions=("sideways",))
    with pytest.raises(ValueError, match="speed"):
        data.load_moving_digits(speed=10)
    with pytest.raises(ValueError, match="canvas_size"):
        data.load_moving_digits(canvas_size=10, num_frames=8)
    with pytest.raises(ValueError, match="num_frames"):
        data.load_moving_digits(num_frames=1)
    with pytest.raises(ValueError, match="templates"):
        data.load_moving_digits(templates=("a {digit}",))


def test_video_features_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(10, 6, 4)).astype(np.float32)
    captions = [f"video {i}" for i in range(10)]
    num_frames = np.arange(10) % 6 + 1
    path = tmp_path / "features.npz"
    data.save_video_features(path, features, captions, num_frames=num_frames, labels=np.arange(10))
    loaded = data.load_video_features(path, test_fraction=0.3, seed=1)
    assert loaded["features_train"].shape == (7, 6, 4) and loaded["features_test"].shape == (3, 6, 4)
    for split in ("train", "test"):
        for feature, caption, mask, label in zip(loaded[f"features_{split}"], loaded[f"captions_{split}"],
                                                 loaded[f"frame_mask_{split}"], loaded[f"labels_{split}"]):
            index = int(caption.split()[1])
            assert label == index
            np.testing.assert_array_equal(feature, features[index])
            assert mask.sum() == num_frames[index] and mask[: num_frames[index]].all()
    with pytest.raises(ValueError, match="features"):
        data.save_video_features(path, features[0], captions)
    with pytest.raises(ValueError, match="path"):
        data.load_video_features(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", features=features)
    with pytest.raises(ValueError, match="captions"):
        data.load_video_features(tmp_path / "bad.npz")
