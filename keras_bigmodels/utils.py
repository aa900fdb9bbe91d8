"""Small shared helpers: argument checks with clear messages, concrete-value access, and
direct layer calls for eager decoding."""

import contextlib
import threading

import numpy as np
import keras

_CALLS = threading.local()


@contextlib.contextmanager
def eager_decoding(enabled=True):
    """A block of eager, gradient-free decode steps that owns its KV caches (PyTorch).

    Keras' `Layer.__call__` (input conversion, autocast scopes, masks, call context) costs
    ~50 us per layer on the PyTorch backend, which dominated eager one-token decode steps
    of small models (about 60 layer calls per token for a 4-layer GPT), and so did copying
    whole KV caches to write one position. Inside this block:

    - `invoke(layer, ...)` runs a built layer's `call` directly. Layers whose variables and
      computation use different dtypes (mixed precision) or that are quantized keep the
      full `__call__`, since their autocast lives there.
    - on torch, Dense and LayerNormalization layers and the hot ops of attention call
      torch directly (`decoding_backend`): Keras' per-op dispatch was most of the rest.
    - `decoding_memo` keeps values derived from weights (fused projection kernels) for the
      rest of the block; weights cannot change inside one generate() call.
    - decode loops use Python-int positions (`eager_index`), and attention writes new keys
      and values into the cache in place (`write_in_place`) instead of copying it.

    Inside a compiled JAX/TensorFlow function those costs are paid once at trace time, so
    only the eager torch decode loop turns this on (`generation.compile_function`).
    """
    previous = (getattr(_CALLS, "direct", False), getattr(_CALLS, "memo", None),
                getattr(_CALLS, "torch", None))
    _CALLS.direct = enabled
    _CALLS.memo = {} if enabled else None
    _CALLS.torch = None
    if enabled and keras.backend.backend() == "torch":
        from keras_bigmodels import decoding_backend

        _CALLS.torch = decoding_backend.kernels()
    try:
        yield
    finally:
        _CALLS.direct, _CALLS.memo, _CALLS.torch = previous


def in_eager_decoding():
    return getattr(_CALLS, "direct", False)


def eager_index(index):
    """`index` as a Python int inside `eager_decoding()` (fast slicing), else unchanged."""
    if in_eager_decoding() and not isinstance(index, int):
        return int(index)
    return index


def write_in_place(buffer, axis, start, update):
    """Write `update` into `buffer` at `start` along `axis`: in place on eager torch,
    a functional `slice_update` elsewhere (and for a non-contiguous torch buffer, which may
    be a broadcast view whose rows share memory, such as Keras' `repeat` of one row)."""
    if keras.backend.backend() != "torch" or not buffer.is_contiguous():
        starts = [0] * len(buffer.shape)
        starts[axis] = start
        return keras.ops.slice_update(buffer, starts, update)
    index = (slice(None),) * axis + (slice(start, start + update.shape[axis]),)
    buffer[index] = update
    return buffer


def decoding_memo(key, build):
    """`build()`, computed once per `eager_decoding()` block (every call outside one)."""
    memo = getattr(_CALLS, "memo", None)
    if memo is None:
        return build()
    if key not in memo:
        memo[key] = build()
    return memo[key]


def callable_directly(layer):
    """Whether `eager_decoding()` may bypass `layer.__call__` (and its weight wrappers)."""
    if not (in_eager_decoding() and layer.built):
        return False
    policy = layer.dtype_policy
    return (policy.compute_dtype == policy.variable_dtype
            and not getattr(policy, "quantization_mode", None))


def decoding_kernels():
    """The direct torch kernels inside `eager_decoding()` on torch, else None."""
    return getattr(_CALLS, "torch", None)


def tensor(x):
    """The backend tensor of a Keras variable (`x` itself otherwise)."""
    return x.value if isinstance(x, keras.Variable) else x


def _direct_torch(layer, x):
    """`layer(x)` by torch kernels for plain Dense/LayerNormalization layers, or None."""
    kernels = _CALLS.torch
    kind = type(layer)
    if kind is keras.layers.Dense:
        if layer.activation is keras.activations.linear and not layer.lora_enabled:
            bias = None if layer.bias is None else layer.bias.value
            return kernels.linear(x, layer.kernel.value, bias)
    elif kind is keras.layers.LayerNormalization:
        if not layer.rms_scaling and layer.axis in (-1, [-1], [len(x.shape) - 1]):
            gamma = None if layer.gamma is None else layer.gamma.value
            beta = None if layer.beta is None else layer.beta.value
            return kernels.layer_norm(x, gamma, beta, layer.epsilon)
    return None


def invoke(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, or `layer.call(...)` inside `eager_decoding()`."""
    if callable_directly(layer):
        if _CALLS.torch is not None and not kwargs and len(args) == 1:
            out = _direct_torch(layer, args[0])
            if out is not None:
                return out
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")


def check_in(name, value, allowed):
    if value not in allowed:
        allowed_text = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {allowed_text}; received {value!r}.")


def check_finite_number(name, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number; received {value!r}.")


def concrete_numpy(x):
    """The value of `x` as numpy when it is concrete (eager), else None (symbolic/traced)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, int, float)):
        try:
            return np.asarray(x)
        except ValueError:
            return None
    if keras.utils.is_keras_tensor(x) or "Tracer" in type(x).__name__:
        return None
    try:
        return keras.ops.convert_to_numpy(x)
    except Exception:  # symbolic TF tensors inside a graph, torch fake tensors, ...
        return None


def check_token_ids(token_ids, vocabulary_size, name="token_ids"):
    """Raise a clear error for token ids outside [0, vocabulary_size) when they are concrete."""
    values = concrete_numpy(token_ids)
    if values is None or values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.integer):
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocabulary_size:
        bad = high if high >= vocabulary_size else low
        raise ValueError(
            f"`{name}` holds id {bad}, outside the vocabulary: ids must be in "
            f"[0, {vocabulary_size - 1}] (vocabulary_size={vocabulary_size})."
        )


def check_sequence_length(length, max_sequence_length, name="token_ids"):
    if length is not None and max_sequence_length is not None and length > max_sequence_length:
        raise ValueError(
            f"`{name}` has length {length}, longer than max_sequence_length="
            f"{max_sequence_length}; truncate the input or build the model with a larger "
            "`max_sequence_length`."
        )
