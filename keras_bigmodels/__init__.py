"""keras_bigmodels: the large-model families in Keras 3, on JAX, TensorFlow and PyTorch.

Importing the package changes nothing process-wide (environment, allocator, JAX config);
CPU tuning is the explicit `keras_bigmodels.runtime.tune_cpu()`.
"""

__version__ = "0.1.0"

from keras_bigmodels import backend  # noqa: F401
from keras_bigmodels import layers  # noqa: F401
from keras_bigmodels import presets  # noqa: F401
from keras_bigmodels import flops  # noqa: F401
from keras_bigmodels import data  # noqa: F401
from keras_bigmodels import losses  # noqa: F401
from keras_bigmodels import metrics  # noqa: F401
from keras_bigmodels import optimizers  # noqa: F401
from keras_bigmodels import models  # noqa: F401
from keras_bigmodels import distribution  # noqa: F401
from keras_bigmodels import runtime  # noqa: F401
from keras_bigmodels import tokenizers  # noqa: F401
from keras_bigmodels import evaluation  # noqa: F401
