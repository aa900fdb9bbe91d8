"""Import-time runtime settings of `keras_bigmodels/__init__.py`."""

import os
import subprocess
import sys

import pytest

# Allocates, writes and frees a 64 MB block twice (malloc as XLA and torch call it);
# prints the page faults of the second time.
_PROBE = """
import ctypes
import resource
import keras_bigmodels

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 1024 * 1024

def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="the malloc settings are for Linux glibc")


def _faults(probe, tuning):
    """The page faults a probe script prints, run with the setting on ("1") or off ("0")."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["KERAS_BIGMODELS_MALLOC_TUNING"] = tuning
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return int(out.stdout.strip().splitlines()[-1])


@linux_glibc
def test_freed_memory_is_reused_without_page_faults():
    # 64 MB is 16,384 pages: glibc maps a block that size fresh on every allocation unless
    # keras_bigmodels keeps freed memory in its heap.
    untuned = _faults(_PROBE, "0")
    if untuned < 10000:
        pytest.skip(f"freed blocks are not re-faulted here ({untuned} faults untuned; "
                    "transparent huge pages always on?)")
    assert _faults(_PROBE, "1") < 1000


_JAX_PROBE = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import resource
import keras_bigmodels
import jax
import jax.numpy as jnp

step = jax.jit(lambda a, b: jnp.sum((a @ b) @ b.T))  # a @ b: a 64 MB temporary
a, b = jnp.ones((2048, 64)), jnp.ones((64, 8192))
step(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step(a, b).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@linux_glibc
def test_jax_steps_reuse_their_buffers():
    pytest.importorskip("jax")
    # XLA allocates a computation's temporaries per run; they come from the main thread's
    # heap (and stay there) only with the import-time settings.
    faults = {tuning: _faults(_JAX_PROBE, tuning) for tuning in ("1", "0")}
    if faults["0"] < 10000:
        pytest.skip(f"temporaries are not re-faulted here ({faults}; transparent huge pages?)")
    assert faults["1"] < 1000, faults
