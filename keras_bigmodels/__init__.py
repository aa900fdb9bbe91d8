"""keras_bigmodels: the large-model families in Keras 3, on JAX, TensorFlow and PyTorch."""

__version__ = "0.1.0"

from keras_bigmodels import layers  # noqa: E402
from keras_bigmodels import presets  # noqa: E402
from keras_bigmodels import flops  # noqa: E402
from keras_bigmodels import data  # noqa: E402
from keras_bigmodels import models  # noqa: E402
from keras_bigmodels import distribution  # noqa: E402
