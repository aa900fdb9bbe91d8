"""A task mixin that trains its output layer and cross-entropy as one chunked
`linear_cross_entropy`, so a training step never materializes [batch, length, vocabulary]
logits."""

from keras import ops

from keras_bigmodels import backend
from keras_bigmodels.losses import SparseCrossEntropy, linear_cross_entropy

# The reductions the fused step reproduces (a per-token "none" loss needs the logits path).
_REDUCTIONS = ("sum", "sum_over_batch_size", "mean", "mean_with_sample_weight")


class FusedOutputLoss:
    """Mixin for a task whose logits are `hidden @ table^T`, trained with cross-entropy:
    inside `fit`'s train step the model returns the hidden states and the loss is
    `linear_cross_entropy`, so the step never materializes the logits.

    The subclass provides `fused_loss_hidden(inputs, training)` (the hidden states the
    output layer reads) and `fused_loss_table()` (the [vocabulary, hidden] table), may
    override `fused_loss_bias()` (a [vocabulary] output bias, None by default), and
    calls `configure_fused_loss(fused_loss, loss, metrics, weighted_metrics)` from
    `compile`. It applies only when the compiled loss is `SparseCrossEntropy` and no
    compiled metric needs the logits; `fused_loss="auto"` also limits it to JAX and
    PyTorch (TensorFlow's XLA ran the chunk loop slower than its fused softmax kernel:
    359 vs 332 ms for the loss+gradients of 4096 tokens x 8192 vocabulary). Evaluation,
    prediction and direct calls always see logits.
    """

    _fusing = False
    _fused_loss = False

    def configure_fused_loss(self, fused_loss, loss, metrics=None, weighted_metrics=None):
        if fused_loss not in ("auto", True, False):
            raise ValueError(
                f"`fused_loss` must be 'auto', True or False; received {fused_loss!r}.")
        usable = (isinstance(loss, SparseCrossEntropy) and loss.reduction in _REDUCTIONS
                  and not metrics and not weighted_metrics)
        if fused_loss is True and not usable:
            raise ValueError("`fused_loss=True` needs `loss=SparseCrossEntropy()` (or 'auto') "
                             f"with a reduction in {_REDUCTIONS} and no compiled metrics, "
                             "which would need the logits.")
        if fused_loss == "auto":
            usable = usable and backend.supports_fused_output_loss()
        self._fused_loss = bool(usable) and fused_loss is not False

    def fused_loss_bias(self):
        """The [vocabulary] bias the output layer adds to its logits; None if it has none."""
        return None

    def train_step(self, *args, **kwargs):
        self._fusing = self._fused_loss
        try:
            return super().train_step(*args, **kwargs)
        finally:
            self._fusing = False

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training and self._fusing:
            return self.fused_loss_hidden(inputs, training)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not (training and self._fusing):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        total = linear_cross_entropy(y_pred, self.fused_loss_table(), y, sample_weight,
                                     bias=self.fused_loss_bias())
        reduction = self.loss.reduction
        if reduction == "sum":
            loss = total
        elif reduction == "mean_with_sample_weight" and sample_weight is not None:
            # As Keras: the sum of the weights, and 0 (not NaN) when they are all 0.
            weights = ops.sum(ops.cast(sample_weight, "float32"))
            loss = ops.where(weights > 0, total / ops.maximum(weights, 1e-12), 0.0)
        else:
            count = 1
            for n in ops.shape(y):
                count = count * n
            loss = total / ops.cast(count, "float32")
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), "float32")
        return loss
