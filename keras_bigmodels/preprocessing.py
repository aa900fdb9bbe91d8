"""Image preprocessing and augmentation as Keras layers, usable in a tf.data pipeline."""

import keras


class ImagePreprocessor:
    """Keras preprocessing layers applied in order; callable inside `tf.data` on any backend.

    A plain callable rather than a `keras.Sequential`, because a Sequential would convert
    tf.data's symbolic tensors to the active backend (JAX, torch) and fail; the layers
    themselves switch to TensorFlow inside a tf.data graph. To run them inside a model
    instead, use `keras.Sequential(preprocessor.layers)`.
    """

    def __init__(self, layers):
        self.layers = list(layers)

    def __call__(self, images, training=False):
        for layer in self.layers:
            images = layer(images, training=training)
        return images


def image_preprocessor(image_size=None, scale=None, offset=0.0, mean=None, std=None,
                       augment=False, seed=None):
    """Resizing, rescaling, normalization and (optional) augmentation layers, in order.

    Keras preprocessing layers run inside `tf.data` whatever the backend, so the result
    (an `ImagePreprocessor`) can be mapped over a dataset (`ds.map(lambda x, y: (prep(x, training=True), y))`) or
    called on numpy batches. Augmentation layers are identities at inference.

    Args:
        image_size: (height, width) or int to resize to; None keeps the size.
        scale, offset: `x * scale + offset` (e.g. 1/255 for uint8 pixels).
        mean, std: per-channel normalization after rescaling (e.g. HF ViT's 0.5, 0.5).
        augment: add small random translations, rotations and zooms (no flips: digits and
            text do not survive them; add `keras.layers.RandomFlip` yourself if yours do).
        seed: seed of the random layers.

    Example:
    >>> prep = image_preprocessor(image_size=32, mean=0.5, std=0.5, augment=True)
    >>> prep(keras.ops.ones((2, 8, 8, 1)), training=True).shape
    (2, 32, 32, 1)
    """
    layers = []
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        layers.append(keras.layers.Resizing(*size, interpolation="bilinear"))
    if scale is not None or offset:
        layers.append(keras.layers.Rescaling(1.0 if scale is None else scale, offset))
    if mean is not None or std is not None:
        mean = 0.0 if mean is None else mean
        std = 1.0 if std is None else std
        variance = [s * s for s in std] if isinstance(std, (list, tuple)) else std * std
        layers.append(keras.layers.Normalization(mean=mean, variance=variance))
    if augment:
        layers += [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        ]
    return ImagePreprocessor(layers)
