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


@tf.function(jit_compile=True)
def _adam_update(variables, grads, momentums, velocities, decays, learning_rate, iterations,
                 weight_decay, beta_1, beta_2, epsilon):
    step = tf.cast(iterations + 1, tf.float32)
    for w, g, m, v, decay in zip(variables, grads, momentums, velocities, decays):
        dtype = w.dtype
        lr = tf.cast(learning_rate, dtype)
        if decay:
            w.assign_sub(w * tf.cast(weight_decay, dtype) * lr)
        g = tf.cast(g, dtype)
        local_step = tf.cast(step, dtype)
        beta_1_power = tf.pow(tf.cast(beta_1, dtype), local_step)
        beta_2_power = tf.pow(tf.cast(beta_2, dtype), local_step)
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m.assign_add((g - m) * (1 - beta_1))
        v.assign_add((tf.square(g) - v) * (1 - beta_2))
        w.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))


def adam_update(variables, grads, momentums, velocities, decays, learning_rate, iterations,
                weight_decay, beta_1, beta_2, epsilon):
    """Keras' AdamW update of every weight (its decoupled weight decay where `decays` says,
    then `keras.optimizers.Adam`'s formula, in each weight's dtype) as one XLA-compiled
    function. Keras' TensorFlow trainer runs a CPU training graph op by op (its
    `jit_compile="auto"` is off without an accelerator), where the update is ~15 small graph
    ops a weight; XLA fuses them into a few loops. `variables`, `momentums`, `velocities`:
    `tf.Variable`s; `iterations`: the optimizer's step count before this update."""
    grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (embeddings) -> dense
    return _adam_update(list(variables), grads, list(momentums), list(velocities),
                        tuple(bool(d) for d in decays), tf.convert_to_tensor(learning_rate),
                        tf.convert_to_tensor(iterations), float(weight_decay or 0.0),
                        float(beta_1), float(beta_2), float(epsilon))
