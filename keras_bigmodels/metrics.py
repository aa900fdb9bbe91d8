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


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class RetrievalRecall(keras.metrics.Metric):
    """Recall@k of paired retrieval from [batch, batch] similarity logits (pair i = i, i).

    `image_to_text`: the share of rows whose own column is among the row's k largest;
    `text_to_image`: the same over columns. Ties count against the pair (its rank is
    the number of strictly larger entries, plus one). `y_true` is ignored.

    Args:
        k: how many retrieved candidates count.
        direction: "image_to_text" (rows) or "text_to_image" (columns).

    Example:
    >>> metric = RetrievalRecall(k=1, direction="text_to_image")
    >>> metric.update_state(None, np.array([[2.0, 0.0], [3.0, 1.0]]))
    >>> float(metric.result())   # column 0 finds row 1 first
    0.5
    """

    def __init__(self, k=1, direction="image_to_text", name=None, **kwargs):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive integer; received {k!r}.")
        if direction not in ("image_to_text", "text_to_image"):
            raise ValueError("`direction` must be one of 'image_to_text', 'text_to_image'; "
                             f"received {direction!r}.")
        super().__init__(name=name or f"{direction}_recall_at_{k}", **kwargs)
        self.k = k
        self.direction = direction
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits = ops.cast(y_pred, "float32")
        if self.direction == "text_to_image":
            logits = ops.transpose(logits)
        own = ops.diagonal(logits)
        better = ops.sum(ops.cast(logits > own[:, None], "float32"), axis=1)
        hits = ops.cast(better < self.k, "float32")
        self.hits.assign_add(ops.sum(hits))
        self.count.assign_add(ops.cast(ops.shape(hits)[0], "float32"))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "direction": self.direction}
