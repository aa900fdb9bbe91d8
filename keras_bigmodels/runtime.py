"""Opt-in process tuning for CPU training and decoding. Nothing here runs at import.

`import keras_bigmodels` changes nothing process-wide: libraries get imported into servers,
notebooks and data-loader workers, whose environment, allocator and JAX configuration are
their owners' business (subprocesses inherit XLA_FLAGS; a heap kept at its high-water mark
is never returned to the OS). A training script that wants the speed calls `tune_cpu()`
once, before its first computation; the guides and `make demo` do.
"""

import os

XLA_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def tune_cpu(xla_scheduler="auto", keep_freed_memory=True):
    """Tune this process for CPU training; returns {setting: what was done}.

    Two measured settings (benchmarks/README.md, 2-core machine, reference GPT):

    - XLA:CPU's concurrency-optimized scheduler off (`xla_scheduler`): it runs independent
      ops side by side, but with <= 4 cores every matmul already uses them all, and the
      overlapping ops fight for cores and cache. JAX training 6-8% faster with it off.
      Sets XLA_FLAGS, so it applies only if called before JAX (or TensorFlow's XLA) starts
      its CPU backend, and subprocesses started later inherit it. "auto": only on <= 4
      cores and only if XLA_FLAGS does not already set the flag.
    - Freed memory kept for reuse (`keep_freed_memory`, Linux/glibc): a step's activations
      and gradients live in a few large buffers that glibc otherwise maps fresh and unmaps
      every step, so the kernel zeroes every page again (~155,000 page faults, ~0.3 s of
      system time per step). glibc then serves large blocks from its heap
      (M_MMAP_MAX=0) and keeps it up to 2 GB above use (M_TRIM_THRESHOLD), like a GPU
      caching allocator; on JAX, CPU computations run on the calling thread (no async
      dispatch) so their buffers come from the main thread's heap. JAX step ~1.1 -> ~0.92
      s; torch ~1.19 -> ~1.12 s. Cost: the process keeps its peak heap until it exits.

    Example:
    >>> import keras_bigmodels as kbm
    >>> kbm.runtime.tune_cpu()
    {'xla_scheduler': 'off', 'keep_freed_memory': 'on'}
    """
    if xla_scheduler not in ("auto", True, False):
        raise ValueError(f"`xla_scheduler` must be 'auto', True or False; received "
                         f"{xla_scheduler!r}.")
    done = {}
    flags = os.environ.get("XLA_FLAGS", "")
    if xla_scheduler is False or (xla_scheduler == "auto" and _cores() <= 4):
        if XLA_SCHEDULER_FLAG in flags:
            done["xla_scheduler"] = "left as set in XLA_FLAGS"
        else:
            os.environ["XLA_FLAGS"] = (flags + " " + XLA_SCHEDULER_FLAG + "=false").strip()
            done["xla_scheduler"] = "off"
    else:
        done["xla_scheduler"] = "unchanged"
    done["keep_freed_memory"] = _keep_freed_memory() if keep_freed_memory else "unchanged"
    return done


def _keep_freed_memory():
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return "unavailable (not glibc)"
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):
        return "unavailable (not glibc)"
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    import keras

    if keras.backend.backend() == "jax":
        from keras_bigmodels.backend import jax_backend

        jax_backend.run_cpu_on_caller()
    return "on"
