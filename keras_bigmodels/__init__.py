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

from keras_bigmodels import layers  # noqa: E402
from keras_bigmodels import presets  # noqa: E402
from keras_bigmodels import flops  # noqa: E402
from keras_bigmodels import data  # noqa: E402
from keras_bigmodels import models  # noqa: E402
from keras_bigmodels import distribution  # noqa: E402
