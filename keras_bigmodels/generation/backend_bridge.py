"""Compiling a stateless decode function on each backend (the one place that imports them).

JAX: `jax.jit` over the model's variable values (a `StatelessScope` maps them in), so
retrained weights are seen without retracing. TensorFlow: `tf.function` compiled with XLA.
Torch: eager under `torch.no_grad()`, with layers called directly
(`utils.eager_decoding`: direct layer calls, int positions and in-place cache writes;
Keras' per-call bookkeeping and cache copies were most of a decode step) -- for small models a compiled graph does not beat
eager dispatch on CPU, and `torch.compile` costs far more than one generate() saves.
"""

import keras


def compile_function(fn, variables, jit_compile=True):
    """A callable running `fn(*args)` compiled; `variables` are the Keras variables it reads."""
    backend = keras.backend.backend()
    variables = list(variables)
    if backend == "jax" and jit_compile:
        import jax

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if backend == "torch":
        import torch

        from keras_bigmodels.utils import eager_decoding

        def no_grad(*args):
            with torch.no_grad(), eager_decoding():
                return fn(*args)

        return no_grad
    return fn
