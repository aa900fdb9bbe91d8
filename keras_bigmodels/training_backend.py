"""Backend bridge of training-step kernels: hints to a backend's compiler.

This is one of the modules allowed to import a backend (see DESIGN.md); everything here
has a plain `keras.ops` meaning on the other backends.
"""

import keras


def materialize(x):
    """`x`, computed into a buffer of its own before the next op reads it.

    On JAX this is an optimization barrier. Its use: XLA folds a transpose into the
    matmul that reads it, and XLA:CPU then runs that matmul (contracting over its
    operand's rows, as a weight gradient x^T g does) on a generic path at ~125-150
    GFLOP/s instead of its packed kernels at ~200; copying the small transposed operand
    first is cheaper than the difference (a [512, 256] x [512, 8192] weight gradient
    14.5 -> 11.6 ms on 2 cores). Elsewhere `x` itself: torch and TensorFlow hand
    transposed operands to BLAS directly.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.lax.optimization_barrier(x)
    return x


def run_cpu_on_caller():
    """JAX: run CPU computations on the thread that calls them (no async dispatch).

    Their buffers are then allocated by the main thread, whose glibc heap can keep them
    between steps (see `keras_bigmodels._tune_malloc`); a worker thread's would be mapped
    and unmapped every time. Applies if set before JAX starts its CPU backend; other
    devices are unaffected. Training steps lost nothing measurable to the missing overlap
    (Keras reads each step's logs anyway); decoding runs as one compiled loop.
    """
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
