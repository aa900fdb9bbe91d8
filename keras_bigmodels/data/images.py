"""Image data without downloads: scikit-learn's 8x8 digits, or the user's image folders."""

import os

import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _resize(images, image_size):
    """Bilinear resize of [n, h, w, c] float images with numpy (no backend needed)."""
    n, h, w, c = images.shape
    out_h, out_w = image_size
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _image_size(image_size):
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(s, (int, np.integer)) or s <= 0 for s in size):
        raise ValueError(f"`image_size` must be a positive int or (height, width); received {image_size!r}.")
    return size


def caption(label):
    """The caption of a digit label: 'a handwritten digit seven'."""
    return f"a handwritten digit {DIGIT_NAMES[int(label)]}"


def load_digits(image_size=None, channels=1, test_fraction=0.2, seed=0):
    """scikit-learn's 1,797 8x8 handwritten digits, offline, with captions.

    Args:
        image_size: int or (height, width) to resize to (bilinear); None keeps 8x8.
        channels: 1 (gray) or 3 (gray repeated, for RGB models).
        test_fraction: share held out as the test split (stratified by a fixed shuffle).
        seed: shuffle seed.

    Returns:
        dict with `x_train`, `x_test` (float32 [n, H, W, C] in [0, 1]), `y_train`, `y_test`
        (int32), `captions_train`, `captions_test`, `class_names`.

    Example:
    >>> data = load_digits(image_size=32, channels=3)
    >>> data["x_train"].shape[1:]
    (32, 32, 3)
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from None
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3; received {channels!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); received {test_fraction}.")
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    size = _image_size(image_size)
    if size is not None and size != images.shape[1:3]:
        images = _resize(images, size)
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    labels = digits.target.astype(np.int32)
    order = np.random.RandomState(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return {
        "x_train": images[train],
        "y_train": labels[train],
        "x_test": images[test],
        "y_test": labels[test],
        "captions_train": [caption(y) for y in labels[train]],
        "captions_test": [caption(y) for y in labels[test]],
        "class_names": list(DIGIT_NAMES),
    }


def load_image_folder(path, image_size, channels=3):
    """Images from `path/<class_name>/*.png|jpg`, resized, with integer labels.

    Returns:
        (images float32 [n, H, W, C] in [0, 1], labels int32 [n], class_names list).

    Example:
    >>> images, labels, names = load_image_folder("my_images/", image_size=64)
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from None
    size = _image_size(image_size)
    if size is None:
        raise ValueError("`image_size` is required for an image folder.")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"`data` path `{path}` is not a directory of class folders.")
    class_names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not class_names:
        raise ValueError(f"`{path}` has no class sub-folders (expected path/<class>/<image>).")
    mode = "RGB" if channels == 3 else "L"
    images, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(path, name)
        for file in sorted(os.listdir(folder)):
            if not file.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")):
                continue
            with Image.open(os.path.join(folder, file)) as image:
                image = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
            images.append(array.reshape(size[0], size[1], channels))
            labels.append(label)
    if not images:
        raise ValueError(f"No images found under `{path}`.")
    return np.stack(images), np.asarray(labels, np.int32), class_names
