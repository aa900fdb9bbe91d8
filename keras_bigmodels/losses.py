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

from keras_bigmodels import backend
from keras_bigmodels.backend import materialize


def sparse_cross_entropy_from_logits(y_true, logits):
    """-log softmax(logits)[y_true] per position: [...] from [..., classes] logits."""
    logits = ops.cast(logits, "float32")
    if backend.prefers_fused_sparse_cross_entropy():
        # TensorFlow has the fused kernel (tf.nn.sparse_softmax_cross_entropy_with_logits,
        # whose gradient is softmax - onehot in one pass); the gather below costs a scatter
        # in the backward pass: a small GPT trained ~12% faster with the fused one.
        return ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    log_probs = ops.log_softmax(logits, axis=-1)
    targets = ops.expand_dims(ops.cast(y_true, "int32"), -1)
    return -ops.squeeze(ops.take_along_axis(log_probs, targets, axis=-1), -1)


def linear_cross_entropy_chunk(vocabulary_size, rows=None):
    """Rows per chunk of `linear_cross_entropy`: ~16 MB of float32 logits (a chunk's
    logits, the table and its gradient then stay in a CPU's last-level cache), 128-1024."""
    if rows is not None:
        return int(rows)
    target = (4 * 1024 * 1024) // max(int(vocabulary_size), 1)
    rows = 128
    while rows * 2 <= min(target, 1024):
        rows *= 2
    return rows


def linear_cross_entropy(hidden, table, targets, sample_weight=None, chunk_size=None,
                         bias=None):
    """sum_i w_i * CE(hidden_i @ table^T + bias, targets_i), never holding all the logits.

    A language model's output layer and its loss in one: `hidden` [..., hidden_dim],
    `table` [vocabulary, hidden_dim] (the tied embedding), integer `targets` [...],
    optional `sample_weight` broadcastable to `targets`. Rows are taken `chunk_size` at a
    time (default `linear_cross_entropy_chunk`); each chunk's logits give its loss and,
    right away, its gradient (softmax - onehot), multiplied into d hidden and accumulated
    into d table while the chunk is still in cache. The backward pass only scales them.

    Same numbers as `sparse_cross_entropy_from_logits` on the full logits (summed with
    the weights), in the same matmul FLOPs, but the [tokens, vocabulary] logits, their
    softmax and their gradient are never written to memory: measured on 2 CPU cores at
    4096 tokens x 8192 vocabulary x 256 hidden, loss+gradients 397 -> 328 ms on JAX,
    452 -> 383 ms on torch; at GPT-2's 50,257 tokens and 16 x 1024 positions the logits
    alone would be 3.3 GB in float32.

    Args:
        hidden: [..., hidden_dim] states the output layer reads.
        table: [vocabulary, hidden_dim] output table (logits are `hidden @ table^T`).
        targets: integer ids [...], the shape of `hidden` without its last axis.
        sample_weight: optional weights broadcastable to `targets`.
        chunk_size: rows per chunk (default `linear_cross_entropy_chunk(vocabulary)`).
        bias: optional [vocabulary] output bias added to every row's logits (BART's
            `final_logits_bias`); its gradient is the chunks' (softmax - onehot) summed.

    Returns:
        The weighted sum of the per-token losses (float32 scalar); divide by the count
        you average over.

    Example:
    >>> hidden, table = keras.ops.ones((2, 3, 8)), keras.ops.ones((10, 8))
    >>> linear_cross_entropy(hidden, table, keras.ops.zeros((2, 3), "int32"),
    ...                      bias=keras.ops.zeros((10,)))  # 6 * log(10)
    """
    hidden_dim = hidden.shape[-1]
    vocabulary = table.shape[0]
    chunk = linear_cross_entropy_chunk(vocabulary, chunk_size)
    h = ops.reshape(hidden, (-1, hidden_dim))
    t = ops.reshape(ops.cast(targets, "int32"), (-1,))
    w = None
    if sample_weight is not None:
        w = ops.reshape(ops.broadcast_to(ops.cast(sample_weight, "float32"),
                                         ops.shape(targets)), (-1,))
    kernels = backend.decoding.op_kernels()
    if kernels is not None and hasattr(kernels, "linear_cross_entropy"):
        # Inside an eager torch training step (`decoding.eager_training()`): the same
        # algorithm as one autograd function over torch's fused kernels (tested equal in
        # tests/test_eager_training.py).
        return kernels.linear_cross_entropy(h, _read(table), t, w, chunk,
                                            None if bias is None else _read(bias))

    def loss_and_gradients(h, table, bias=None):
        compute_dtype = h.dtype
        kernel = ops.cast(table, compute_dtype)
        # Added to the float32 logits: equal to the logits path in float32, and no
        # rounding of the sum under mixed precision.
        offset = None if bias is None else ops.cast(bias, "float32")[None, :]
        rows = ops.shape(h)[0]
        pad = (-rows) % chunk
        hp = ops.pad(h, [[0, pad], [0, 0]])
        tp = ops.pad(t, [[0, pad]])
        wp = ops.pad(ops.ones((rows,), "float32") if w is None else w, [[0, pad]])
        xs = (ops.reshape(hp, (-1, chunk, hidden_dim)), ops.reshape(tp, (-1, chunk)),
              ops.reshape(wp, (-1, chunk)))
        classes = ops.arange(vocabulary, dtype="int32")[None, :]

        def step(index, carry):
            total, d_table, d_hidden, d_bias = carry
            hc, tc, wc = (part[index] for part in xs)
            logits = ops.cast(ops.matmul(hc, ops.transpose(kernel)), "float32")
            if offset is not None:
                logits = logits + offset
            peak = ops.max(logits, axis=-1, keepdims=True)
            exps = ops.exp(logits - peak)
            sums = ops.sum(exps, axis=-1, keepdims=True)
            picked = ops.take_along_axis(logits, tc[:, None], axis=-1)
            losses = ops.log(sums) + peak - picked
            total = total + ops.sum(losses[:, 0] * wc)
            onehot = ops.cast(ops.equal(classes, tc[:, None]), "float32")
            grad = ops.cast((exps / sums - onehot) * wc[:, None], compute_dtype)
            # Accumulated transposed, h^T grad, from a materialized copy of h^T: a plain
            # row-major product (see `materialize`; 3-4% of a small GPT's step on JAX).
            d_table = d_table + ops.cast(ops.matmul(materialize(ops.transpose(hc)), grad),
                                         "float32")
            d_hidden = ops.slice_update(d_hidden, (index, 0, 0),
                                        ops.matmul(grad, kernel)[None])
            if offset is not None:
                d_bias = d_bias + ops.sum(ops.cast(grad, "float32"), axis=0)
            return total, d_table, d_hidden, d_bias

        chunks = ops.shape(xs[0])[0]
        init = (ops.zeros((), "float32"), ops.zeros((hidden_dim, vocabulary), "float32"),
                ops.zeros(ops.shape(xs[0]), compute_dtype),
                ops.zeros((vocabulary if offset is not None else 1,), "float32"))
        total, d_table, d_hidden, d_bias = ops.fori_loop(0, chunks, step, init)
        d_hidden = ops.reshape(d_hidden, (-1, hidden_dim))[:rows]
        d_table = ops.transpose(d_table)

        def grad_fn(*args, upstream=None):
            if upstream is None:  # JAX and TensorFlow pass it positionally
                (upstream,) = args
            upstream = ops.cast(upstream, "float32")
            grads = (ops.cast(ops.cast(d_hidden, "float32") * upstream, h.dtype),
                     ops.cast(d_table * upstream, table.dtype))
            if bias is not None:
                grads = grads + (ops.cast(d_bias * upstream, bias.dtype),)
            return grads

        return total, grad_fn

    # custom_gradient differentiates every positional input, so the bias is one only
    # when given.
    inputs = (h, table) if bias is None else (h, table, bias)
    return ops.custom_gradient(loss_and_gradients)(*(_read(x) for x in inputs))


def _read(value):
    """A tensor of `value`: on TensorFlow `convert_to_tensor` hands a Keras variable
    back as a variable, which eager `tf.custom_gradient` refuses to differentiate."""
    value = ops.convert_to_tensor(value)
    if isinstance(value, keras.Variable):
        value = ops.cast(value, value.dtype)
    return value


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


# Added to scores that must not count: large and finite, so a fully masked row gives a
# uniform softmax rather than NaN.
NEGATIVE_SCORE = -1e9


def mil_nce_loss(similarity, positive_mask=None):
    """MIL-NCE over a batch of text–video pairs (Miech et al. 2020), as UniVL trains it.

    Row j of the square `similarity` [batch, batch] is text j, column j video j. For each
    pair j the positives are the texts i with `positive_mask[i, j]` (the pair itself by
    default; several when a video has several captions), scored against video j; the
    negatives are every other text against video j and text j against every video that
    is not one of its positives:
    L_j = -log( sum_{i in P_j} e^{s_ij} / (sum_i e^{s_ij} + sum_{k not in P_j} e^{s_jk}) ).

    Args:
        similarity: [batch, batch] float scores, texts on rows and videos on columns.
        positive_mask: optional [batch, batch] 0/1, `positive_mask[i, j]` when text i
            describes video j; every column needs one positive. Default: the identity.

    Returns:
        The mean of L_j over the batch (float32 scalar).

    Example:
    >>> mil_nce_loss(keras.ops.eye(4) * 10.0)  # near 0: each pair outscores the rest
    """
    similarity = ops.cast(similarity, "float32")
    batch = ops.shape(similarity)[0]
    if positive_mask is None:
        positive_mask = ops.eye(batch, dtype="float32")
    positive = ops.cast(positive_mask, "float32")
    # Row j: video j against every text, then text j against every video but its positives.
    from_video = ops.transpose(similarity)
    from_text = similarity + positive * NEGATIVE_SCORE
    scores = ops.concatenate([from_video, from_text], axis=-1)
    positives = ops.concatenate([ops.transpose(positive), ops.zeros_like(positive)], axis=-1)
    numerator = ops.logsumexp(scores + (1.0 - positives) * NEGATIVE_SCORE, axis=-1)
    return ops.mean(ops.logsumexp(scores, axis=-1) - numerator)


def frame_nce_loss(predicted, frames, frame_mask, target_weights):
    """UniVL's masked frame loss: each masked frame's prediction picks its own original
    frame out of every valid frame of the batch (NCE, a softmax over batch * frames).

    Args:
        predicted: [batch, frames, dim] predicted frame features (the cross encoder's
            outputs at the frame positions, projected to the feature size).
        frames: [batch, frames, dim] the original (unmasked) frame features.
        frame_mask: [batch, frames] 1 on real frames, 0 on padding (never a candidate).
        target_weights: [batch, frames] 1 on the masked frames the loss is taken on.

    Returns:
        The mean over the weighted frames of -log softmax(predicted_i . frames)[i] (0 when
        no frame is weighted).

    Example:
    >>> x = keras.ops.eye(4)[None]  # one video of 4 orthogonal frames
    >>> frame_nce_loss(10.0 * x, x, keras.ops.ones((1, 4)), keras.ops.ones((1, 4)))
    """
    dim = predicted.shape[-1]
    predicted = ops.reshape(ops.cast(predicted, "float32"), (-1, dim))
    frames = ops.reshape(ops.cast(frames, "float32"), (-1, dim))
    valid = ops.reshape(ops.cast(frame_mask, "float32"), (-1,))
    weights = ops.reshape(ops.cast(target_weights, "float32"), (-1,)) * valid
    logits = ops.matmul(predicted, ops.transpose(frames)) + (1.0 - valid)[None, :] * NEGATIVE_SCORE
    log_probs = ops.log_softmax(logits, axis=-1)
    own = ops.diagonal(log_probs)
    count = ops.sum(weights)
    return ops.where(count > 0, -ops.sum(own * weights) / ops.maximum(count, 1.0), 0.0)



def _square_pair_logits(logits):
    logits = ops.cast(logits, "float32")
    if len(logits.shape) != 2 or (None not in logits.shape and logits.shape[0] != logits.shape[1]):
        raise ValueError("Contrastive losses take square [batch, batch] logits of matching "
                         f"pairs (image i with text i); received shape {tuple(logits.shape)}.")
    return logits


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ContrastiveLoss(keras.losses.Loss):
    """CLIP's symmetric InfoNCE: pair i is row i's and column i's one positive.

    `y_pred` is the [batch, batch] logits of every image against every text (scaled
    cosine similarities); `y_true` is ignored, since the pairing is the labels. Each
    row's loss is the mean of its image->text cross-entropy (over the row) and its
    text->image one (over the column), so the batch mean is
    (CE(images -> texts) + CE(texts -> images)) / 2. Under `keras.distribution` data
    parallelism on JAX the step sees the global logits, so the negatives are the whole
    global batch, as in the paper.

    Example:
    >>> ContrastiveLoss()(np.zeros(4), 10.0 * np.eye(4))   # ~ 3 * exp(-10)
    """

    def __init__(self, name="contrastive_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = _square_pair_logits(y_pred)
        image_to_text = -ops.diagonal(ops.log_softmax(logits, axis=1))
        text_to_image = -ops.diagonal(ops.log_softmax(logits, axis=0))
        return 0.5 * (image_to_text + text_to_image)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SigmoidContrastiveLoss(keras.losses.Loss):
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every pair a binary label.

    -1/batch * sum_ij log sigmoid(z_ij * logits_ij), z_ii = 1 and z_ij = -1 otherwise;
    `y_pred` is the [batch, batch] logits including SigLIP's learned bias, `y_true` is
    ignored.

    Example:
    >>> SigmoidContrastiveLoss()(np.zeros(4), 10.0 * (2 * np.eye(4) - 1))  # ~ 4 * exp(-10)
    """

    def __init__(self, name="sigmoid_contrastive_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = _square_pair_logits(y_pred)
        # Every pair as a negative, then the diagonal moved to the positive side: no
        # [batch, batch] label matrix is built.
        negatives = ops.sum(ops.log_sigmoid(-logits), axis=1)
        diagonal = ops.diagonal(logits)
        return -(negatives + ops.log_sigmoid(diagonal) - ops.log_sigmoid(-diagonal))

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}
