"""Small shared helpers: argument checks with clear messages and concrete-value access."""

import numpy as np
import keras


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")


def check_transformer_dims(key_dim=None, **dims):
    """Positive ints for every named size, and `hidden_dim` divisible by `num_heads` unless
    `key_dim` gives the head size."""
    for name, value in dims.items():
        if value is not None:
            check_positive_int(name, value)
    if key_dim is not None:
        check_positive_int("key_dim", key_dim)
    elif "hidden_dim" in dims and "num_heads" in dims and dims["hidden_dim"] % dims["num_heads"]:
        raise ValueError(
            f"`hidden_dim` ({dims['hidden_dim']}) must be divisible by `num_heads` "
            f"({dims['num_heads']}) unless `key_dim` is given.")


def check_pair(value, name):
    """An int or (height, width) pair of positive ints, as a tuple of two ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"`{name}` must be an int or (height, width); received {value!r}.")
    for v in pair:
        check_positive_int(name, v)
    return tuple(int(v) for v in pair)


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


def check_token_ids(token_ids, vocabulary_size, name="token_ids", size_name="vocabulary_size"):
    """Raise a clear error for token ids outside [0, vocabulary_size) when they are concrete.

    `size_name` names the table size in the message (e.g. "num_segments" for segment ids).
    """
    values = concrete_numpy(token_ids)
    if values is None or values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.integer):
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocabulary_size:
        bad = high if high >= vocabulary_size else low
        table = "the vocabulary" if size_name == "vocabulary_size" else "its table"
        raise ValueError(
            f"`{name}` holds id {bad}, outside {table}: ids must be in "
            f"[0, {vocabulary_size - 1}] ({size_name}={vocabulary_size})."
        )


def check_sequence_length(length, max_sequence_length, name="token_ids"):
    if length is not None and max_sequence_length is not None and length > max_sequence_length:
        raise ValueError(
            f"`{name}` has length {length}, longer than max_sequence_length="
            f"{max_sequence_length}; truncate the input or build the model with a larger "
            "`max_sequence_length`."
        )
