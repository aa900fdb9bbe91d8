"""Model families. Each family registers its presets on import."""

from keras_bigmodels.models.base import Backbone, Task
