"""keras_bigmodels: the large-model families in Keras 3, on JAX, TensorFlow and PyTorch."""

__version__ = "0.1.0"

import os as _os


def _tune_xla_cpu():
    """Turn off XLA:CPU's concurrency-optimized scheduler on small CPUs.

    On by default, it orders a step so that independent ops run side by side; with 2-4
    cores every matmul already uses them all, and the overlapping ops only fight for
    cores and cache: a small GPT trained 6-8% faster on JAX with it off (2 cores,
    benchmarks/README.md). Takes effect only if set before JAX (or TensorFlow's XLA)
    starts its CPU backend; an explicit setting in XLA_FLAGS wins, and
    KERAS_BIGMODELS_XLA_CPU_TUNING=0 leaves XLA_FLAGS alone.
    """
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler"
    flags = _os.environ.get("XLA_FLAGS", "")
    if _os.environ.get("KERAS_BIGMODELS_XLA_CPU_TUNING", "1") == "0" or flag in flags:
        return
    try:
        cores = len(_os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = _os.cpu_count() or 1
    if cores <= 4:
        _os.environ["XLA_FLAGS"] = (flags + " " + flag + "=false").strip()


_tune_xla_cpu()


def _tune_malloc():
    """Keep freed memory for reuse instead of handing it back to Linux after every step.

    A training step's activations and gradients live in a few large buffers (XLA's is one
    ~550 MB block for the reference GPT) that glibc maps fresh on every step and unmaps at
    its end, so the kernel faults in and zeroes every page again: ~155,000 page faults and
    ~0.3 s of system time per step on 2 cores (torch's per-op buffers alike). Like the
    caching allocators of GPU frameworks, we let the process keep its high-water mark:
    glibc serves large blocks from its heap (M_MMAP_MAX=0) and does not trim it below 2 GB
    (M_TRIM_THRESHOLD). glibc can do that only for the main thread's heap (other threads'
    heaps top out at 64 MB), so on JAX the CPU client runs computations on the calling
    thread (`jax_cpu_enable_async_dispatch=False`, `training_backend.run_cpu_on_caller`)
    rather than limiting the process to one malloc arena, which made decoding threads
    contend. Measured on the reference GPT (benchmarks/README.md): page faults per step
    ~155,000 -> 0, JAX step ~1.1-1.2 -> ~0.92-0.96 s.

    Linux with glibc only. Takes effect for computations started after the import, so
    import keras_bigmodels before the first one (importing keras first is fine).
    KERAS_BIGMODELS_MALLOC_TUNING=0 leaves malloc and JAX's dispatch alone (memory then
    goes back to the OS between steps, at the cost above).
    """
    if _os.environ.get("KERAS_BIGMODELS_MALLOC_TUNING", "1") == "0":
        return
    try:
        if not _os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    import keras

    if keras.backend.backend() == "jax":
        from keras_bigmodels.training_backend import run_cpu_on_caller

        run_cpu_on_caller()


_tune_malloc()

from keras_bigmodels import layers  # noqa: E402
from keras_bigmodels import presets  # noqa: E402
from keras_bigmodels import flops  # noqa: E402
from keras_bigmodels import data  # noqa: E402
from keras_bigmodels import models  # noqa: E402
from keras_bigmodels import distribution  # noqa: E402
