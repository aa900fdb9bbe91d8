import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax" and "XLA_FLAGS" not in os.environ:
    # Tiny test models spend their time compiling, not running: a lower LLVM optimization
    # level halves XLA's per-op compile time in eager JAX. Tests only; numerics unchanged.
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


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
