import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax" and "XLA_FLAGS" not in os.environ:
    # Tiny test models spend their time compiling, not running: a lower LLVM optimization
    # level halves XLA's per-op compile time in eager JAX. Tests only. Numerics: on an
    # Intel Xeon host a compiled train step computed a recall metric wrong at this level
    # (tests/models/test_clip.py reads recall outside the step for that reason).
    os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.config.set_dtype_policy("float32")


# `@pytest.mark.one_backend(home)`: a test whose answer does not depend on the backend it
# runs under (pure numpy/Python code), or a guide's tiny end-to-end run whose backend-specific
# parts the model tests already cover on every backend. When `tests/run_backends.py` runs
# several backends (it sets KBM_TEST_BACKENDS to them), such a test runs once: in its home
# backend's pass when the home is among them, else in the first backend's pass. Several homes
# may be named, in order of preference (`one_backend("jax", "torch")`: a test that skips
# itself on TensorFlow names a second home so that a `tensorflow torch` run still runs it).
# Run alone (plain `pytest`, `make test-one`, or `run_backends.py --every-backend`), it runs
# on whatever backend the process has.
RUN_BACKENDS = [b for b in os.environ.get("KBM_TEST_BACKENDS", "").split(",") if b]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "one_backend(*homes): run once per multi-backend `make test`, in the "
        "home backend's pass (default: the first backend run); see tests/conftest.py")


def one_backend_for(*homes):
    """The backend whose pass runs a `one_backend(*homes)` test, or None for every pass."""
    if len(RUN_BACKENDS) < 2:
        return None
    return next((home for home in homes if home in RUN_BACKENDS), RUN_BACKENDS[0])


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("one_backend")
        if marker is None:
            continue
        homes = marker.args or (marker.kwargs.get("home"),)
        runs_on = one_backend_for(*homes)
        if runs_on is not None and runs_on != backend:
            item.add_marker(pytest.mark.skip(
                reason=f"one backend per make test: runs in the {runs_on} pass"))


def pytest_report_header(config):
    header = f"keras {keras.__version__}, backend {keras.backend.backend()}"
    if len(RUN_BACKENDS) > 1:
        header += f"; one_backend tests share out over {','.join(RUN_BACKENDS)}"
    return header
