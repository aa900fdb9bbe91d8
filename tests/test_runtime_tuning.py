"""`import keras_bigmodels` changes nothing process-wide; `runtime.tune_cpu()` is the opt-in."""

import os
import subprocess
import sys

import pytest

# Allocates, writes and frees a 64 MB block twice (malloc as XLA and torch call it);
# prints the page faults of the second time. TUNE selects whether tune_cpu() runs.
_PROBE = """
import ctypes
import resource
import keras_bigmodels
if TUNE:
    keras_bigmodels.runtime.tune_cpu()

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

_JAX_PROBE = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import resource
import keras_bigmodels
if TUNE:
    keras_bigmodels.runtime.tune_cpu()
import jax
import jax.numpy as jnp

step = jax.jit(lambda a, b: jnp.sum((a @ b) @ b.T))  # a @ b: a 64 MB temporary
a, b = jnp.ones((2048, 64)), jnp.ones((64, 8192))
step(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step(a, b).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# What an import could change: the environment, JAX's config, glibc's malloc parameters
# (observed through mallinfo2-free means: a freed 64 MB block is unmapped when untouched).
_IMPORT_PROBE = """
import json, os, sys
before = dict(os.environ)
import keras
import keras_bigmodels
import keras_bigmodels.models, keras_bigmodels.generation, keras_bigmodels.backend
out = {"env_changed": sorted(k for k in set(before) | set(os.environ)
                             if before.get(k) != os.environ.get(k))}
if keras.backend.backend() == "jax":
    import jax
    out["async_dispatch"] = bool(jax.config.read("jax_cpu_enable_async_dispatch"))
print(json.dumps(out))
"""

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="the malloc settings are for Linux glibc")


def _run(probe, tune=None, backend=None):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if backend:
        env["KERAS_BACKEND"] = backend
    if tune is not None:
        probe = probe.replace("if TUNE:", f"if {tune}:")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def test_import_leaves_the_process_untouched():
    import json

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    result = json.loads(_run(_IMPORT_PROBE, backend=backend))
    assert result["env_changed"] == [], result
    if backend == "jax":
        assert result["async_dispatch"] is True


@linux_glibc
def test_import_alone_does_not_keep_freed_memory():
    # 64 MB is 16,384 pages: glibc maps a block that size fresh on every allocation unless
    # told to keep freed memory; importing the package must not tell it.
    untuned = int(_run(_PROBE, tune=False))
    if untuned < 10000:
        pytest.skip(f"freed blocks are not re-faulted here ({untuned} faults untuned; "
                    "transparent huge pages always on?)")
    assert int(_run(_PROBE, tune=True)) < 1000


def test_tune_cpu_reports_and_validates(monkeypatch):
    import keras_bigmodels as kbm

    with pytest.raises(ValueError, match="xla_scheduler"):
        kbm.runtime.tune_cpu(xla_scheduler="fast")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
    done = kbm.runtime.tune_cpu(xla_scheduler=False, keep_freed_memory=False)
    assert done == {"xla_scheduler": "left as set in XLA_FLAGS",
                    "keep_freed_memory": "unchanged"}
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    assert kbm.runtime.tune_cpu(xla_scheduler=False, keep_freed_memory=False)[
        "xla_scheduler"] == "off"
    assert os.environ["XLA_FLAGS"] == (
        "--foo --xla_cpu_enable_concurrency_optimized_scheduler=false")


@linux_glibc
def test_jax_steps_reuse_their_buffers_after_tune_cpu():
    pytest.importorskip("jax")
    faults = {tune: int(_run(_JAX_PROBE, tune=tune)) for tune in (True, False)}
    if faults[False] < 10000:
        pytest.skip(f"temporaries are not re-faulted here ({faults}; transparent huge pages?)")
    assert faults[True] < 1000, faults
