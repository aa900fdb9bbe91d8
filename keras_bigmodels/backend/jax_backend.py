"""JAX halves of the backend boundary: compiled decode functions, training-step hints and
CPU runtime settings."""

import jax
import keras


def compile_function(fn, variables, jit_compile=True):
    if not jit_compile:
        return fn

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)
    return lambda *args: jitted([v.value for v in variables], *args)


def materialize(x):
    """An optimization barrier. XLA folds a transpose into the matmul that reads it, and
    XLA:CPU then runs that matmul (contracting over its operand's rows, as a weight gradient
    x^T g does) on a generic path at ~125-150 GFLOP/s instead of its packed kernels at ~200;
    copying the small transposed operand first is cheaper than the difference (a
    [512, 256] x [512, 8192] weight gradient 14.5 -> 11.6 ms on 2 cores)."""
    return jax.lax.optimization_barrier(x)


def run_cpu_on_caller():
    """Run CPU computations on the calling thread (no async dispatch), so their buffers come
    from the main thread's glibc heap, which `runtime.tune_cpu()` lets the process keep."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def cpu_async_dispatch():
    return bool(jax.config.read("jax_cpu_enable_async_dispatch"))
