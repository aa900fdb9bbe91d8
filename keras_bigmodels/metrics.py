"""Keras metrics of the task models (kept apart from losses and data transforms)."""

import keras
from keras import ops

from keras_bigmodels.losses import sparse_cross_entropy_from_logits


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class Perplexity(keras.metrics.Metric):
    """exp(mean token cross-entropy) of integer targets and logits.

    Example:
    >>> lm.compile(metrics=[Perplexity()])
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        losses = sparse_cross_entropy_from_logits(y_true, y_pred)
        weights = ops.ones_like(losses) if sample_weight is None else ops.cast(
            sample_weight, losses.dtype)
        self.total.assign_add(ops.sum(losses * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.exp(self.total / ops.maximum(self.count, 1.0))
