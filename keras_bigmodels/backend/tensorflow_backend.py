"""TensorFlow halves of the backend boundary: XLA-compiled decode functions and
`tf.distribute` data parallelism (Keras 3's TensorFlow trainer runs under the strategy that
was in scope when the model was built)."""

import tensorflow as tf


def compile_function(fn, variables, jit_compile=True):
    return tf.function(fn, jit_compile=jit_compile)


def mirrored_strategy(devices=None):
    """A `tf.distribute.MirroredStrategy` over `devices` (all visible GPUs/CPU when None).

    Example:
    >>> strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])
    >>> with strategy.scope():
    ...     model = build_model(); model.compile("sgd", "mse")
    >>> model.fit(x, y, batch_size=8)   # each replica gets 4 rows, gradients are summed
    """
    return tf.distribute.MirroredStrategy(devices)
