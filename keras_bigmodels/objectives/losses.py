"""Cross-entropy of integer targets and logits, fast on every backend.

Keras' `sparse_categorical_crossentropy` on the PyTorch backend moves the class axis to
position 1 and builds a one-hot tensor, so for language-model logits [batch, length,
vocabulary] it runs log-softmax over a strided axis and copies the full logits twice:
over 40% of a small GPT's training step went there (benchmarks/README.md). Here the loss
is -log_softmax(logits)[target] over the last, contiguous axis (one fused kernel each way
on torch), the same number with no one-hot and no copy. On TensorFlow, whose Keras loss is
already the fused `sparse_softmax_cross_entropy_with_logits`, it is that.
"""

import keras
from keras import ops


def sparse_cross_entropy_from_logits(y_true, logits):
    """-log softmax(logits)[y_true] per position: [...] from [..., classes] logits."""
    logits = ops.cast(logits, "float32")
    if keras.backend.backend() == "tensorflow":
        # TensorFlow has the fused kernel (tf.nn.sparse_softmax_cross_entropy_with_logits,
        # whose gradient is softmax - onehot in one pass); the gather below costs a scatter
        # in the backward pass: a small GPT trained ~12% faster with the fused one.
        return ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    log_probs = ops.log_softmax(logits, axis=-1)
    targets = ops.expand_dims(ops.cast(y_true, "int32"), -1)
    return -ops.squeeze(ops.take_along_axis(log_probs, targets, axis=-1), -1)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SparseCrossEntropy(keras.losses.Loss):
    """`SparseCategoricalCrossentropy(from_logits=True)`, without the one-hot.

    Example:
    >>> lm.compile(optimizer="adam", loss=SparseCrossEntropy())
    """

    def __init__(self, name="sparse_cross_entropy", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return sparse_cross_entropy_from_logits(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}
