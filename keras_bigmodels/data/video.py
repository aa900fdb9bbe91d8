"""Video–text data without downloads: moving handwritten digits, or the user's frame features.

`load_moving_digits` paints scikit-learn's 8x8 digits onto a larger black canvas and moves
each one in a straight line over a few frames, with a caption that names the digit and the
direction ("a seven moving left"). Train and test videos are built from disjoint digit
images (the split of `load_digits`), so a test video never shows a digit image seen in
training. `load_video_features` reads the user's own per-frame features from a `.npz` file
(the format is documented there) for guides' `--data` flag.
"""

import os

import numpy as np

from keras_bigmodels.data.images import DIGIT_NAMES, load_digits

# Unit steps per frame as (row, column): rows grow downwards, as in an image array.
DIRECTION_STEPS = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
    "up-left": (-1, -1),
    "up-right": (-1, 1),
    "down-left": (1, -1),
    "down-right": (1, 1),
}
CARDINAL_DIRECTIONS = ("left", "right", "up", "down")
ALL_DIRECTIONS = tuple(DIRECTION_STEPS)

CAPTION_TEMPLATES = (
    "a {digit} moving {direction}",
    "the digit {digit} moves {direction}",
    "a handwritten {digit} going {direction}",
    "a {digit} sliding {direction}",
)


def video_caption(digit, direction, template=CAPTION_TEMPLATES[0]):
    """The caption of a moving digit: 'a seven moving left'.

    Args:
        digit: digit label 0-9.
        direction: a name in `DIRECTION_STEPS` ("left", "up-right", ...).
        template: a format string with `{digit}` and `{direction}` fields.

    Example:
    >>> video_caption(7, "left")
    'a seven moving left'
    """
    if direction not in DIRECTION_STEPS:
        raise ValueError(f"`direction` must be one of {ALL_DIRECTIONS}; received {direction!r}.")
    return template.format(digit=DIGIT_NAMES[int(digit)], direction=direction)


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int; received {value!r}.")


def _paint_videos(images, labels, count, directions, num_frames, canvas_size, speed,
                  distractor, templates, rng):
    """`count` videos from digit `images` [n, s, s, c]; positions are top-left corners."""
    digit_size, channels = images.shape[1], images.shape[3]
    travel = speed * (num_frames - 1)
    free = canvas_size - digit_size  # largest top-left coordinate
    frames = np.zeros((count, num_frames, canvas_size, canvas_size, channels), np.float32)
    positions = np.zeros((count, num_frames, 2), np.int32)
    image_index = rng.integers(0, len(images), size=count)
    direction_index = rng.integers(0, len(directions), size=count)
    template_index = rng.integers(0, len(templates), size=count)
    captions = []
    for i in range(count):
        step = np.asarray(DIRECTION_STEPS[directions[direction_index[i]]])
        start = np.empty(2, np.int64)
        for axis in range(2):
            if step[axis] > 0:
                start[axis] = rng.integers(0, free - travel + 1)
            elif step[axis] < 0:
                start[axis] = rng.integers(travel, free + 1)
            else:
                start[axis] = rng.integers(0, free + 1)
        track = start[None, :] + step[None, :] * speed * np.arange(num_frames)[:, None]
        positions[i] = track
        if distractor:
            # A still digit of another class: the caption names only the moving one, so a
            # model must use the motion, not merely which digits are present.
            others = np.flatnonzero(labels != labels[image_index[i]])
            other = images[rng.choice(others)]
            row, column = rng.integers(0, free + 1, size=2)
            frames[i, :, row:row + digit_size, column:column + digit_size] = other
        digit = images[image_index[i]]
        for t, (row, column) in enumerate(track):
            window = frames[i, t, row:row + digit_size, column:column + digit_size]
            np.maximum(window, digit, out=window)
        captions.append(video_caption(labels[image_index[i]], directions[direction_index[i]],
                                      templates[template_index[i]]))
    return {
        "frames": frames,
        "captions": captions,
        "digits": labels[image_index].astype(np.int32),
        "directions": direction_index.astype(np.int32),
        "positions": positions,
        "image_index": image_index.astype(np.int32),
    }


def load_moving_digits(num_train=1000, num_test=200, num_frames=8, canvas_size=32,
                       digit_size=8, speed=None, directions=CARDINAL_DIRECTIONS,
                       distractor=False, channels=1, templates=CAPTION_TEMPLATES,
                       test_fraction=0.2, seed=0):
    """Short synthetic videos of a handwritten digit moving in a straight line, with captions.

    Args:
        num_train, num_test: number of videos in each split.
        num_frames: frames per video (the issue's range is 8-16; any >= 2 works).
        canvas_size: height and width of each frame.
        digit_size: the 8x8 digit is resized to this size (bilinear) before painting.
        speed: pixels moved per frame; None picks the largest speed that keeps the whole
            path inside the canvas.
        directions: direction names from `ALL_DIRECTIONS` ("left", "right", "up", "down",
            "up-left", "up-right", "down-left", "down-right"); labels index this tuple.
        distractor: add a still digit of another class to every video.
        channels: 1 (gray) or 3 (gray repeated, for RGB image encoders).
        templates: caption format strings with `{digit}` and `{direction}`; each video
            draws one at random.
        test_fraction: share of digit images held out for the test videos.
        seed: one seed for the image split and every draw; the same seed gives the same data.

    Returns:
        dict with `frames_train`, `frames_test` (float32 [N, T, H, W, C] in [0, 1]),
        `captions_train`, `captions_test` (lists of str), `digits_train`, `digits_test`
        (int32 digit labels), `directions_train`, `directions_test` (int32 indices into
        `direction_names`), `positions_train`, `positions_test` (int32 [N, T, 2] top-left
        (row, column) of the moving digit), `digit_names`, `direction_names`, `templates`.

    Example:
    >>> videos = load_moving_digits(num_train=4, num_test=2, num_frames=8)
    >>> videos["frames_train"].shape
    (4, 8, 32, 32, 1)
    """
    for name, value in (("num_train", num_train), ("num_test", num_test),
                        ("canvas_size", canvas_size), ("digit_size", digit_size)):
        _check_positive_int(name, value)
    _check_positive_int("num_frames", num_frames)
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be at least 2 to show motion; received {num_frames}.")
    directions = tuple(directions)
    if not directions or any(d not in DIRECTION_STEPS for d in directions):
        raise ValueError(
            f"`directions` must be a non-empty tuple of names from {ALL_DIRECTIONS}; "
            f"received {directions!r}."
        )
    if len(set(directions)) != len(directions):
        raise ValueError(f"`directions` has duplicates; received {directions!r}.")
    templates = tuple(templates)
    if not templates or any("{digit}" not in t or "{direction}" not in t for t in templates):
        raise ValueError(
            "`templates` must be format strings with `{digit}` and `{direction}`; "
            f"received {templates!r}."
        )
    free = canvas_size - digit_size
    if free < num_frames - 1:
        raise ValueError(
            f"`canvas_size` ({canvas_size}) leaves no room for `digit_size` ({digit_size}) to "
            f"move one pixel per frame over `num_frames` ({num_frames}); need canvas_size >= "
            f"{digit_size + num_frames - 1}."
        )
    max_speed = free // (num_frames - 1)
    if speed is None:
        speed = max_speed
    _check_positive_int("speed", speed)
    if speed > max_speed:
        raise ValueError(
            f"`speed` must be at most {max_speed} pixels per frame so that the path fits in "
            f"the canvas; received {speed}."
        )
    digits = load_digits(image_size=digit_size, channels=channels, test_fraction=test_fraction,
                         seed=seed)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        painted = _paint_videos(digits[f"x_{split}"], digits[f"y_{split}"], count, directions,
                                num_frames, canvas_size, speed, distractor, templates, rng)
        for key in ("frames", "captions", "digits", "directions", "positions"):
            splits[f"{key}_{split}"] = painted[key]
    splits.update(digit_names=list(DIGIT_NAMES), direction_names=list(directions),
                  templates=list(templates), speed=int(speed))
    return splits


def save_video_features(path, features, captions, num_frames=None, labels=None):
    """Write per-frame features in the `.npz` format `load_video_features` reads.

    Args:
        path: file to write (`.npz`).
        features: float [N, T, D] per-frame (or per-clip) features; pad short videos.
        captions: N strings.
        num_frames: optional int [N] count of valid frames per video (default: all T).
        labels: optional int [N] class labels (for zero-shot or probe accuracy).

    Example:
    >>> save_video_features("features.npz", np.zeros((2, 4, 16)), ["a cat", "a dog"])
    """
    arrays = _check_features(np.asarray(features, np.float32), captions, num_frames, labels)
    np.savez(os.fspath(path), **arrays)


def _check_features(features, captions, num_frames, labels):
    if features.ndim != 3:
        raise ValueError(f"`features` must be [videos, frames, dim]; received shape {features.shape}.")
    count, length = features.shape[:2]
    captions = np.asarray([str(c) for c in captions])
    if captions.shape != (count,):
        raise ValueError(f"`captions` must hold one string per video ({count}); received {len(captions)}.")
    arrays = {"features": features, "captions": captions}
    if num_frames is not None:
        num_frames = np.asarray(num_frames).astype(np.int32)
        if num_frames.shape != (count,) or num_frames.min() < 1 or num_frames.max() > length:
            raise ValueError(
                f"`num_frames` must be [videos] ints in [1, {length}]; received {num_frames!r}."
            )
        arrays["num_frames"] = num_frames
    if labels is not None:
        labels = np.asarray(labels).astype(np.int32)
        if labels.shape != (count,):
            raise ValueError(f"`labels` must be one int per video ({count}); received shape {labels.shape}.")
        arrays["labels"] = labels
    return arrays


def load_video_features(path, test_fraction=0.2, seed=0):
    """The user's per-frame video features and captions from a `.npz` file, split in two.

    The file holds `features` (float [N, T, D]: one feature vector per frame or clip, from
    any image or video encoder; pad short videos to T), `captions` (N strings), and
    optionally `num_frames` (int [N] valid frames per video) and `labels` (int [N]).
    `save_video_features` writes it; `numpy.savez` with those keys does too.

    Args:
        path: the `.npz` file.
        test_fraction: share of videos held out (a seeded shuffle).
        seed: shuffle seed.

    Returns:
        dict with `features_train`, `features_test` (float32 [n, T, D]), `frame_mask_train`,
        `frame_mask_test` (bool [n, T], True on valid frames), `captions_train`,
        `captions_test` (lists of str) and, when the file has them, `labels_train`,
        `labels_test`.

    Example:
    >>> save_video_features("features.npz", np.zeros((10, 4, 16)), ["a cat"] * 10)
    >>> load_video_features("features.npz")["features_train"].shape
    (8, 4, 16)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"`path` `{path}` is not a file (expected a .npz of video features).")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); received {test_fraction}.")
    with np.load(path, allow_pickle=False) as stored:
        missing = {"features", "captions"} - set(stored.files)
        if missing:
            raise ValueError(f"`{path}` lacks {sorted(missing)}; it holds {sorted(stored.files)}.")
        arrays = _check_features(stored["features"].astype(np.float32), stored["captions"],
                                 stored["num_frames"] if "num_frames" in stored.files else None,
                                 stored["labels"] if "labels" in stored.files else None)
    count, length = arrays["features"].shape[:2]
    valid = arrays.get("num_frames", np.full(count, length, np.int32))
    frame_mask = np.arange(length)[None, :] < valid[:, None]
    order = np.random.RandomState(seed).permutation(count)
    n_test = max(1, int(round(count * test_fraction)))
    out = {}
    for split, index in (("test", order[:n_test]), ("train", order[n_test:])):
        out[f"features_{split}"] = arrays["features"][index]
        out[f"frame_mask_{split}"] = frame_mask[index]
        out[f"captions_{split}"] = [str(c) for c in arrays["captions"][index]]
        if "labels" in arrays:
            out[f"labels_{split}"] = arrays["labels"][index]
    return out
