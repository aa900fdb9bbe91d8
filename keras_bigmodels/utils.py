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
    - decode loops use Python-int positions (`eager_index`), and attention writes new keys
      and values into the cache in place (`write_in_place`) instead of copying it.

    Inside a compiled JAX/TensorFlow function those costs are paid once at trace time, so
    only the eager torch decode loop turns this on (`generation.compile_function`).
    """
    previous = getattr(_CALLS, "direct", False)
    _CALLS.direct = enabled
    try:
        yield
    finally:
        _CALLS.direct = previous


def in_eager_decoding():
    return getattr(_CALLS, "direct", False)


def eager_index(index):
    """`index` as a Python int inside `eager_decoding()` (fast slicing), else unchanged."""
    if in_eager_decoding() and not isinstance(index, int):
        return int(index)
    return index


def write_in_place(buffer, axis, start, update):
    """Write `update` into `buffer` at `start` along `axis`: in place on eager torch,
    a functional `slice_update` elsewhere."""
    if keras.backend.backend() != "torch":
        starts = [0] * len(buffer.shape)
        starts[axis] = start
        return keras.ops.slice_update(buffer, starts, update)
    index = (slice(None),) * axis + (slice(start, start + update.shape[axis]),)
    buffer[index] = update
    return buffer


def invoke(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, or `layer.call(...)` inside `eager_decoding()`."""
    if in_eager_decoding() and layer.built:
        policy = layer.dtype_policy
        if (policy.compute_dtype == policy.variable_dtype
                and not getattr(policy, "quantization_mode", None)):
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
