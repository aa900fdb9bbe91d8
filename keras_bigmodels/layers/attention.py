"""Multi-head attention: softmax(Q K^T / sqrt(d_k)) V over several heads."""

import keras
from keras import ops

from keras_bigmodels import backend
from keras_bigmodels.backend.decoding import (
    KerasKernels,
    invoke,
    memo,
    op_kernels,
    tensor,
    write_in_place,
)
from keras_bigmodels.backend.decoding import shape as eager_shape
from keras_bigmodels.backend.decoding import active as in_eager_decoding
from keras_bigmodels.utils import check_positive_int

# A large finite negative number rather than -inf: a query row whose keys are all masked
# (left padding under a causal mask) then gets a uniform softmax instead of NaNs that
# would spread through the value matmul into every later layer.
MASK_VALUE = -1e9


_FUSED_DEFAULT = None


def fused_by_default():
    """Whether `keras.ops.dot_product_attention` beats the explicit path here (decided once;
    measured in benchmarks/bench_attention.py, see `backend.prefers_fused_attention`)."""
    global _FUSED_DEFAULT
    if _FUSED_DEFAULT is None:
        _FUSED_DEFAULT = backend.prefers_fused_attention()
    return _FUSED_DEFAULT


def causal_mask(query_length, key_length, offset=0):
    """Boolean [query_length, key_length] mask; query i sees keys j <= offset + i."""
    rows = ops.arange(query_length)[:, None] + offset
    cols = ops.arange(key_length)[None, :]
    return ops.greater_equal(rows, cols)


def causal_blocks(query_length, key_length, block=128, max_blocks=8):
    """[(start, stop)] query blocks for causal self-attention computed blockwise, or None.

    The explicit (einsum + softmax) path computes every query-key score and masks half of
    them; computing each query block against only the keys it can see skips the fully
    masked blocks. Rows of 128 (more for long sequences, at most `max_blocks` blocks) keep
    the products large. Measured on CPU JAX, causal attention forward+backward at length
    256 (16 x 4 heads x 64): 68 ms unblocked, 47 ms in 2 blocks, and a small GPT trained
    ~5-10% faster. TensorFlow's XLA was ~5% slower with blocks, so `MultiHeadAttention`
    uses them on JAX only.
    """
    if not isinstance(query_length, int) or query_length != key_length:
        return None
    block = max(block, -(-query_length // max_blocks))
    if query_length % block or query_length < 2 * block:
        return None
    return [(start, start + block) for start in range(0, query_length, block)]


def merge_masks(padding_mask=None, attention_mask=None, causal=None):
    """Combine optional masks into one boolean [batch|1, 1, q, k] mask (True attends).

    Args:
        padding_mask: [batch, key_length] (True/1 for real tokens).
        attention_mask: [batch, q, k] or [batch, heads, q, k].
        causal: a boolean [q, k] mask from `causal_mask`.
    """
    mask = None
    if padding_mask is not None:
        mask = ops.cast(padding_mask, "bool")[:, None, None, :]
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        if len(attention_mask.shape) == 3:
            attention_mask = attention_mask[:, None, :, :]
        mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
    if causal is not None:
        causal = causal[None, None, :, :]
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


def masked_bias(bias, padding_mask=None, causal=False):
    """An additive logits bias with the masks folded in: `bias` [1|batch, heads, q, k]
    where a query may attend, `MASK_VALUE` where `padding_mask` [batch, k] or (`causal`)
    a later position hides the key -> [batch, heads, q, k].

    A stack whose layers share one position bias and one mask (T5's) folds them once
    instead of merging them in every layer, as transformers' T5 does.

    Example:
    >>> bias = RelativePositionBias(num_heads=2)(query_length=3, key_length=3)
    >>> masked_bias(bias, keras.ops.ones((4, 3)), causal=True).shape
    (4, 2, 3, 3)
    """
    causal_part = None
    if causal:
        causal_part = causal_mask(ops.shape(bias)[-2], ops.shape(bias)[-1])
    mask = merge_masks(padding_mask, causal=causal_part)
    if mask is None:
        return bias
    return ops.where(mask, bias, ops.cast(MASK_VALUE, bias.dtype))


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head (and grouped/multi-query) attention with masks, bias and a KV cache.

    Projections are named `query`, `key`, `value` and `output`, with kernels shaped
    `[hidden, heads, head_dim]` and `[heads, head_dim, hidden]` so that one layout map
    shards every model along heads.

    Args:
        num_heads: number of query heads.
        key_dim: size of each head (defaults to `hidden_dim // num_heads`).
        num_key_value_heads: heads for keys/values; fewer than `num_heads` gives grouped
            query attention, 1 gives multi-query attention. Defaults to `num_heads`.
        value_dim: size of each value head (defaults to `key_dim`).
        output_dim: size of the output (defaults to the query's last dimension).
        use_bias: whether the projections have biases.
        dropout: dropout rate on the attention probabilities.
        scale: multiplier of the logits; defaults to `1 / sqrt(key_dim)` (T5 uses 1.0).
        use_fused: use `keras.ops.dot_product_attention` whenever it can compute the
            result (no attention dropout in training, no scores requested). None picks
            whichever is faster on this backend and device (`fused_by_default`).
        kernel_initializer, bias_initializer: initializers of the projections.

    Call args:
        query: [batch, query_length, query_dim].
        value: [batch, key_length, value_dim]; defaults to `query` (self-attention).
        key: defaults to `value`.
        padding_mask: [batch, key_length], 1 for real tokens.
        attention_mask: [batch, query_length, key_length] (or with a heads axis).
        attention_bias: additive logits bias broadcastable to [batch, heads, q, k].
        use_causal_mask: whether query i may only see keys j <= i (shifted by the
            cache index when a cache is given).
        cache: [batch, 2, num_key_value_heads, max_length, key_dim] of past keys/values.
        cache_update_index: where the new keys/values are written in the cache.
        return_attention_scores: also return the [batch, heads, q, k] probabilities.

    Example:
    >>> layer = MultiHeadAttention(num_heads=4, key_dim=8)
    >>> x = keras.random.normal((2, 10, 32))
    >>> layer(x, use_causal_mask=True).shape
    (2, 10, 32)
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        num_key_value_heads=None,
        value_dim=None,
        output_dim=None,
        use_bias=True,
        dropout=0.0,
        scale=None,
        use_fused=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        num_key_value_heads = num_key_value_heads or num_heads
        check_positive_int("num_key_value_heads", num_key_value_heads)
        if num_heads % num_key_value_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must be a multiple of `num_key_value_heads` "
                f"({num_key_value_heads})."
            )
        if key_dim is not None:
            check_positive_int("key_dim", key_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received {dropout}.")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.num_key_value_heads = num_key_value_heads
        self.value_dim = value_dim
        self.output_dim = output_dim
        self.use_bias = use_bias
        self.dropout = dropout
        self.scale = scale
        self.use_fused = use_fused
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )
        self.supports_masking = False

    def _projection(self, name, equation, output_shape, bias_axes, initializer=None):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=initializer or self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape or query_shape
        key_shape = key_shape or value_shape
        query_dim = query_shape[-1]
        if self.key_dim is None:
            if query_dim % self.num_heads:
                raise ValueError(
                    f"The query's hidden size ({query_dim}) must divide by `num_heads` "
                    f"({self.num_heads}) when `key_dim` is not given."
                )
            self._key_dim = query_dim // self.num_heads
        else:
            self._key_dim = self.key_dim
        self._value_dim = self.value_dim or self._key_dim
        self._output_dim = self.output_dim or query_dim
        h, kvh = self.num_heads, self.num_key_value_heads
        self.query_dense = self._projection(
            "query", "btd,dnh->btnh", (None, h, self._key_dim), "nh"
        )
        self.query_dense.build(query_shape)
        self.key_dense = self._projection(
            "key", "bsd,dnh->bsnh", (None, kvh, self._key_dim), "nh"
        )
        self.key_dense.build(key_shape)
        self.value_dense = self._projection(
            "value", "bsd,dnh->bsnh", (None, kvh, self._value_dim), "nh"
        )
        self.value_dense.build(value_shape)
        self.output_dense = self._projection(
            "output", "btnh,nhd->btd", (None, self._output_dim), "d",
            initializer=self.output_kernel_initializer,
        )
        self.output_dense.build((query_shape[0], query_shape[1], h, self._value_dim))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def _check_mask_shape(self, name, mask, rank, query, key_length):
        if mask is None:
            return
        shape = tuple(mask.shape)
        ok = len(shape) in rank
        if ok and name == "padding_mask" and shape[-1] is not None and isinstance(key_length, int):
            ok = shape[-1] == key_length
        if ok and name == "attention_mask":
            q_len = query.shape[1]
            k_len = key_length if isinstance(key_length, int) else None
            ok = (shape[-2] in (None, 1, q_len)) and (shape[-1] in (None, 1, k_len))
        if not ok:
            expected = {
                "padding_mask": f"[batch, key_length={key_length}]",
                "attention_mask": f"[batch, query_length={query.shape[1]}, "
                f"key_length={key_length}] (optionally with a heads axis)",
            }[name]
            raise ValueError(f"`{name}` must have shape {expected}; received {shape}.")

    def call(
        self,
        query,
        value=None,
        key=None,
        padding_mask=None,
        attention_mask=None,
        attention_bias=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
        return_attention_scores=False,
        training=None,
    ):
        self_attention = value is None and key is None
        # A cache without an update index holds precomputed keys/values (cross-attention
        # over an encoder's outputs, `key_value_cache`): read, never written.
        static_cache = cache is not None and cache_update_index is None
        value = query if value is None else value
        key = value if key is None else key
        if cache is not None:
            self._check_cache(cache)
        if static_cache and (use_causal_mask or not self_attention):
            raise ValueError(
                "A `cache` without `cache_update_index` is a read-only cross-attention cache "
                "(from `key_value_cache`): it takes neither `value`/`key` nor "
                "`use_causal_mask`. For a self-attention cache pass `cache_update_index`.")
        matrices = self._use_matrices(cache)
        if static_cache:
            q = self._project_query(query, matrices)
            k, v = cache[:, 0], cache[:, 1]
        elif matrices:
            q, k, v = self._matrix_projections(query, key, value, self_attention)
        else:
            q = invoke(self.query_dense, query)
            k = invoke(self.key_dense, key)
            v = invoke(self.value_dense, value)

        offset = 0
        heads_first = static_cache
        if cache is not None and not static_cache:
            max_length = cache.shape[3]
            length = q.shape[1]
            if (
                isinstance(cache_update_index, int)
                and max_length is not None
                and length is not None
                and cache_update_index + length > max_length
            ):
                raise ValueError(
                    f"The cache holds {max_length} positions but the input writes positions "
                    f"{cache_update_index}..{cache_update_index + length - 1}; build a longer "
                    "cache (`max_length`)."
                )
            # Heads-first: each head's keys are one contiguous [length, key_dim] block,
            # the layout both attention products read, so no step copies the cache.
            # Eager decoding stacks with torch directly: the three Keras ops cost more
            # than the copy of one token's keys and values.
            new = (op_kernels() or KerasKernels).cache_entries(k, v, cache.dtype)
            if in_eager_decoding() and isinstance(cache_update_index, int):
                cache = write_in_place(cache, 3, cache_update_index, new)
            else:
                cache = ops.slice_update(cache, [0, 0, 0, cache_update_index, 0], new)
            offset = cache_update_index
            heads_first = True
            if (in_eager_decoding() and isinstance(offset, int) and padding_mask is None
                    and attention_mask is None
                    and (attention_bias is None or attention_bias.shape[-1] == max_length)):
                # Only positions < offset + length hold keys yet: attend over that view
                # instead of the whole buffer (and the same columns of a position bias
                # over the buffer, T5's), and a single query needs no causal mask.
                end = offset + length
                k, v = cache[:, 0, :, :end], cache[:, 1, :, :end]
                if attention_bias is not None:
                    attention_bias = attention_bias[..., :end]
                use_causal_mask = use_causal_mask and length > 1
            else:
                k, v = cache[:, 0], cache[:, 1]

        key_length = eager_shape(k)[2 if heads_first else 1]
        self._check_mask_shape("padding_mask", padding_mask, (2,), query, key_length)
        self._check_mask_shape("attention_mask", attention_mask, (3, 4), query, key_length)
        blocks = None
        if (use_causal_mask and cache is None and padding_mask is None
                and attention_mask is None and attention_bias is None
                and not return_attention_scores and not self._fused_path(training)
                and backend.prefers_blockwise_causal_attention()):
            blocks = causal_blocks(q.shape[1], k.shape[1])
        if blocks:
            # Query block [start, stop) sees keys [0, stop): the fully masked upper-right
            # blocks are never computed (~25% of the score work at 2 blocks, ~44% at 8).
            outs = []
            for start, stop in blocks:
                block_mask = merge_masks(causal=causal_mask(stop - start, stop, start))
                block, _ = self.attend(q[:, start:stop], k[:, :stop], v[:, :stop], block_mask,
                                       training=training)
                outs.append(block)
            out, scores = ops.concatenate(outs, axis=1), None
        else:
            causal = None
            if use_causal_mask:
                causal = causal_mask(ops.shape(q)[1], key_length, offset)
            if (static_cache and in_eager_decoding() and padding_mask is not None
                    and attention_mask is None):
                # Cross-attention over the encoder's mask, the same tensor at every step:
                # merged once per generate() (the entry holds it, so its id stays its own).
                mask = memo((id(padding_mask), "merged_mask"),
                            lambda: (padding_mask, merge_masks(padding_mask)))[1]
            else:
                mask = merge_masks(padding_mask, attention_mask, causal)
            out, scores = self.attend(q, k, v, mask, attention_bias, return_attention_scores,
                                      training, heads_first=heads_first)
        if matrices:
            out = self._matrix_output(out)
        else:
            out = invoke(self.output_dense, out)
        results = [out]
        if return_attention_scores:
            results.append(scores)
        if cache is not None:
            results.append(cache)
        return results[0] if len(results) == 1 else tuple(results)

    def _check_cache(self, cache):
        expected = (2, self.num_key_value_heads, self._key_dim)
        got = tuple(cache.shape[1:3]) + tuple(cache.shape[4:])
        if len(cache.shape) != 5 or got != expected:
            raise ValueError(
                "`cache` must have shape [batch, 2, num_key_value_heads="
                f"{self.num_key_value_heads}, max_length, key_dim={self._key_dim}]; "
                f"received {tuple(cache.shape)}."
            )

    def key_value_cache(self, value, key=None):
        """Projected keys and values of `value` (and `key`, default `value`) as a read-only
        cache [batch, 2, num_key_value_heads, length, key_dim]: an encoder-decoder computes
        its cross-attention keys/values once per `generate()`, not at every step.

        Example:
        >>> kv = layer.key_value_cache(encoder_outputs)
        >>> out, _ = layer(decoder_step, cache=kv)   # no cache_update_index: read-only
        """
        key = value if key is None else key
        if in_eager_decoding() and self._use_matrices(True):
            # Eager (torch): the kernels as matrices and torch's stack, as the decode steps
            # project; EinsumDense's einsum copies each kernel once more.
            kernels = op_kernels() or KerasKernels
            key, value = ops.convert_to_tensor(key), ops.convert_to_tensor(value)
            k, v = (kernels.reshape(kernels.linear(x, *self._matrix(dense)),
                                    (-1, eager_shape(x)[1], self.num_key_value_heads, dim))
                    for x, dense, dim in ((key, self.key_dense, self._key_dim),
                                          (value, self.value_dense, self._value_dim)))
            return kernels.cache_entries(k, v, k.dtype)
        k = invoke(self.key_dense, key)
        v = invoke(self.value_dense, value)
        return ops.transpose(ops.stack([k, v], axis=1), (0, 1, 3, 2, 4))

    def _project_query(self, query, matrices):
        if not matrices:
            return invoke(self.query_dense, query)
        kernels = op_kernels() or KerasKernels
        out = kernels.linear(query, *self._matrix(self.query_dense))
        return kernels.reshape(out, (-1, eager_shape(out)[1], self.num_heads, self._key_dim))

    # Decode steps project with each kernel reshaped to a matrix (a free view) instead of
    # EinsumDense. Eager torch: Keras' einsum permutes and copies the kernel on every call,
    # which on one token cost more than the product; self-attention's three input
    # projections also become one product with a kernel concatenated once per generate().
    # Compiled (XLA CPU): the einsum form made XLA transpose the output kernel every step.
    # TensorFlow's training graph takes them too (`backend.prefers_matrix_projections`).
    def _use_matrices(self, cache):
        if cache is None and not in_eager_decoding():
            # A traced graph (the training step): the matrix form where the backend
            # prefers it, checked at trace time (`backend.prefers_matrix_projections`).
            return backend.prefers_matrix_projections() and self._matrices_allowed()
        # Once per generate() in eager decoding: the checks read torch module attributes
        # (~10 lookups), a visible share of a one-token step.
        return memo((id(self), "use_matrices"), self._matrices_allowed)

    def _matrices_allowed(self):
        for layer in (self.query_dense, self.key_dense, self.value_dense, self.output_dense):
            if (not layer.built or layer.lora_enabled
                    or getattr(layer.dtype_policy, "quantization_mode", None)):
                return False
        return True

    def _matrix(self, dense, contracted=1):
        """The kernel as an [inputs, outputs] matrix over its first `contracted` axes, and
        the bias as a vector (made once per `generate()` in eager decoding)."""
        def build():
            kernel, bias = tensor(dense.kernel), dense.bias
            rows = 1
            for n in kernel.shape[:contracted]:
                rows *= n
            kernels = op_kernels()
            if kernels is None or self.compute_dtype != self.variable_dtype:
                kernels = KerasKernels
                kernel = ops.cast(kernel, self.compute_dtype)
                bias = None if bias is None else ops.cast(bias, self.compute_dtype)
            return (kernels.reshape(kernel, (rows, -1)),
                    None if bias is None else kernels.reshape(tensor(bias), (-1,)))

        return memo((id(dense), "matrix"), build)

    def _matrix_projections(self, query, key, value, self_attention):
        kernels = op_kernels() or KerasKernels
        denses = (self.query_dense, self.key_dense, self.value_dense)
        heads = (self.num_heads, self.num_key_value_heads, self.num_key_value_heads)
        dims = (self._key_dim, self._key_dim, self._value_dim)
        if self_attention and in_eager_decoding() and eager_shape(query)[1] == 1:
            # One token a row (a decode step): one product with the three kernels side by
            # side, concatenated once per generate(). Not for longer inputs (an encoder
            # pass runs once per generate(): the concatenation would not pay back).
            def fuse():
                matrices, biases = zip(*(self._matrix(d) for d in denses))
                bias = None if biases[0] is None else kernels.concatenate(biases, 0)
                return kernels.concatenate(matrices, 1), bias

            kernel, bias = memo((id(self), "qkv"), fuse)
            parts = kernels.split(kernels.linear(query, kernel, bias),
                                  [n * d for n, d in zip(heads, dims)])
        else:
            parts = [kernels.linear(x, *self._matrix(dense))
                     for dense, x in zip(denses, (query, key, value))]
        return tuple(kernels.reshape(p, (-1, eager_shape(p)[1], n, d))
                     for p, n, d in zip(parts, heads, dims))

    def _matrix_output(self, out):
        kernels = op_kernels() or KerasKernels
        kernel, bias = self._matrix(self.output_dense, contracted=2)
        shape = eager_shape(out)
        return kernels.linear(kernels.reshape(out, (shape[0], shape[1], kernel.shape[0])),
                              kernel, bias)

    def _fused_path(self, training):
        """Whether `attend` takes `keras.ops.dot_product_attention` (scores aside)."""
        if bool(training) and self.dropout > 0:
            return False
        return fused_by_default() if self.use_fused is None else bool(self.use_fused)

    def attend(self, q, k, v, mask=None, bias=None, return_scores=False, training=None,
               heads_first=False):
        """Attention on projected heads: q [b, t, h, d], k/v [b, s, kvh, d] (or
        [b, kvh, s, d] with `heads_first`, the cache layout); returns [b, t, h, d]."""
        scale = self.scale if self.scale is not None else 1.0 / float(self._key_dim) ** 0.5
        dropping = bool(training) and self.dropout > 0
        kernels = op_kernels()
        if (kernels is not None and not return_scores and not dropping
                and self.num_heads == self.num_key_value_heads):
            # Masks and an additive bias (T5's positions, padding) go into the kernel's
            # one additive mask, so T5 and cross-attention decode on it too.
            return kernels.attention(q, k, v, scale, heads_first, mask=mask, bias=bias,
                                     mask_value=MASK_VALUE), None
        if self._fused_path(training) and not return_scores:
            if heads_first:
                k, v = ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3))
            return self._fused(q, k, v, mask, bias, scale), None
        return self._explicit(q, k, v, mask, bias, scale, training, heads_first)

    def _fused(self, q, k, v, mask, bias, scale):
        backend_name = backend.name()
        if mask is not None and (bias is not None or backend_name == "torch"):
            # torch SDPA takes one of mask/bias, and its boolean mask turns a fully
            # masked row into NaNs: an additive finite bias avoids both.
            additive = ops.where(mask, 0.0, MASK_VALUE)
            bias = additive if bias is None else bias + additive
            mask = None
        if bias is not None:
            bias = ops.cast(bias, q.dtype)
        groups = self.num_heads // self.num_key_value_heads
        if backend_name == "tensorflow" and groups > 1:
            # Keras' TensorFlow path mishandles some head groupings; it has no fused
            # kernel to lose, so expand the key/value heads.
            k = ops.repeat(k, groups, axis=2)
            v = ops.repeat(v, groups, axis=2)
        return ops.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)

    def _explicit(self, q, k, v, mask, bias, scale, training, heads_first=False):
        groups = self.num_heads // self.num_key_value_heads
        if groups > 1:
            k = ops.repeat(k, groups, axis=1 if heads_first else 2)
            v = ops.repeat(v, groups, axis=1 if heads_first else 2)
        kv = "bnsh" if heads_first else "bsnh"
        logits = ops.einsum(f"btnh,{kv}->bnts", q, k) * ops.cast(scale, q.dtype)
        logits = ops.cast(logits, "float32")
        if bias is not None:
            logits = logits + ops.cast(bias, "float32")
        if mask is not None:
            logits = ops.where(mask, logits, MASK_VALUE)
        probs = ops.cast(ops.softmax(logits, axis=-1), q.dtype)
        dropped = invoke(self.dropout_layer, probs, training=training)
        return ops.einsum(f"bnts,{kv}->btnh", dropped, v), probs

    def compute_output_spec(self, query, value=None, key=None, return_attention_scores=False,
                            cache=None, **kwargs):
        out_dim = self.output_dim or query.shape[-1]
        out = keras.KerasTensor(query.shape[:-1] + (out_dim,), dtype=self.compute_dtype)
        value = query if value is None else value
        results = [out]
        if return_attention_scores:
            results.append(keras.KerasTensor(
                (query.shape[0], self.num_heads, query.shape[1], value.shape[1]),
                dtype=self.compute_dtype))
        if cache is not None:
            results.append(keras.KerasTensor(cache.shape, dtype=cache.dtype))
        return results[0] if len(results) == 1 else tuple(results)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            num_key_value_heads=self.num_key_value_heads,
            value_dim=self.value_dim,
            output_dim=self.output_dim,
            use_bias=self.use_bias,
            dropout=self.dropout,
            scale=self.scale,
            use_fused=self.use_fused,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            output_kernel_initializer=keras.initializers.serialize(
                self.output_kernel_initializer
            ),
        )
        return config
