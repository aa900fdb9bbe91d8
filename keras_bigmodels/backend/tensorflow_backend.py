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


def checked_tf_dataset(dataset, prepare):
    """`dataset` whose elements pass a host-side numpy check before they are yielded.

    `prepare(element)` runs when the map is traced and returns `(tensors, check)`:
    `check(arrays)` gets the tensors' values as numpy and raises on a bad batch. The
    check runs through `tf.numpy_function` (zero-copy on CPU) on every backend that
    iterates a `tf.data.Dataset`, so the dataset stays a dataset.
    """
    import numpy as np

    is_tuple = isinstance(dataset.element_spec, tuple)

    def checked(*element):
        element = element if is_tuple else element[0]
        tensors, check = prepare(element)
        if not tensors:
            return element

        def host_check(*arrays):
            check(arrays)
            return np.array(True)

        done = tf.numpy_function(host_check, list(tensors), tf.bool, stateful=True)
        with tf.control_dependencies([done]):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.map(checked)
