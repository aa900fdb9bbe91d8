"""The eager-decoding contract: how a decode loop that runs eagerly (torch) skips Keras'
per-call overhead without changing any result.

On the torch backend `compile_function` runs the decode loop eagerly, one token per step,
where Keras' `Layer.__call__` bookkeeping (~50 us a layer) and per-op dispatch (5-25 us an
op, against 1-6 us for the torch call) were most of a step. Inside `eager_decoding()`:

1. `invoke(layer, ...)` runs a built layer's `call` directly, or a **kernel registered for
   its exact class** (`register_kernel`). A kernel returns the layer's output or
   `NotImplemented` (e.g. a Dense with an activation), and every registered kernel has a
   test that it equals the layer's own Keras call on random inputs
   (tests/test_backend_boundary.py). Layers whose variables and computation use different
   dtypes (mixed precision) or that are quantized always take the full `__call__`.
2. `op_kernels()` gives layer code the backend's direct forms of its hot ops (`linear`,
   `layer_norm`, `attention`, `split`, `reshape`, `concatenate`, `activation`,
   `cache_entries`, `take_rows`);
   `KerasKernels` are the same ops in `keras.ops` for compiled steps.
3. `memo(key, build)` keeps values derived from weights (fused q/k/v kernels) for the rest
   of the block: weights cannot change inside one generate() call.
4. Positions are Python ints (`eager_index`), and `write_in_place(buffer, ...)` writes new
   keys/values into a cache **in place only if the decode loop owns it** (`own(tensor)`,
   called by the loop and `initial_cache` on tensors they create); any other tensor gets
   a functional update, so no caller's tensor is ever mutated behind its back.

How a new layer opts in: call sublayers through `invoke`, read `op_kernels()` for hot ops
(fall back to `KerasKernels`), and, for a Keras core layer class the family relies on,
register a kernel in `torch_backend.py` with its equivalence test.
"""

import contextlib
import threading
import weakref

import keras
from keras import ops

_STATE = threading.local()
_KERNELS = {}  # (backend name, layer class) -> fn(layer, *args, **kwargs)


def register_kernel(layer_cls, backend="torch"):
    """Register `fn(layer, *args, **kwargs)` as the eager-decoding kernel of `layer_cls`.

    Example:
    >>> @register_kernel(keras.layers.Dense)
    ... def dense(layer, x):
    ...     return NotImplemented if layer.activation is not keras.activations.linear else ...
    """
    def decorator(fn):
        _KERNELS[(backend, layer_cls)] = fn
        return fn

    return decorator


def registered_kernels(backend="torch"):
    """{layer class: kernel} registered for `backend` (importing its module registers them)."""
    if backend == "torch" and keras.backend.backend() == "torch":
        from keras_bigmodels.backend import torch_backend  # noqa: F401
    return {cls: fn for (name, cls), fn in _KERNELS.items() if name == backend}


class KerasKernels:
    """The `keras.ops` forms of the op kernels (compiled decode steps, mixed precision)."""

    @staticmethod
    def linear(x, kernel, bias=None):
        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias

    @staticmethod
    def reshape(x, shape):
        return ops.reshape(x, shape)

    @staticmethod
    def concatenate(xs, axis):
        return ops.concatenate(xs, axis=axis)

    @staticmethod
    def take_rows(tree, indices):
        """Every tensor of a nest gathered along its first axis at `indices` (valid,
        non-negative ids: beam search's reordering of its caches)."""
        return keras.tree.map_structure(lambda x: ops.take(x, indices, axis=0), tree)

    @staticmethod
    def cache_entries(k, v, dtype):
        """Keys and values [batch, length, heads, dim] as one heads-first cache block
        [batch, 2, heads, length, dim] of `dtype`."""
        return ops.cast(ops.transpose(ops.stack([k, v], axis=1), (0, 1, 3, 2, 4)), dtype)

    @staticmethod
    def split(x, sizes):
        """Split the last axis into pieces of `sizes`."""
        cuts, total = [], 0
        for size in sizes[:-1]:
            total += size
            cuts.append(total)
        return ops.split(x, cuts, axis=-1)


@contextlib.contextmanager
def eager_decoding(enabled=True, training=False):
    """A block of eager, gradient-free decode steps (see the module docstring);
    `training=True` is `eager_training`."""
    previous = getattr(_STATE, "frame", None)
    frame = None
    if enabled:
        backend = keras.backend.backend()
        op_kernels_ = None
        if backend == "torch":
            from keras_bigmodels.backend import torch_backend

            op_kernels_ = torch_backend.TorchOps
        frame = {
            "memo": {},
            "ops": op_kernels_,
            "kernels": {cls: fn for (name, cls), fn in _KERNELS.items() if name == backend},
            "owned": {},  # id -> weakref: tensors compare elementwise, so no set
            "dispatch": {},  # id(layer) -> (layer, kernel or None): see `invoke`
            "in_place": backend == "torch" and not training,
        }
    _STATE.frame = frame
    try:
        yield
    finally:
        _STATE.frame = previous


def eager_training(enabled=True):
    """One eager training step (forward, loss, backward, update) through the same fast path.

    On torch, where Keras runs a training step eagerly, `invoke` then calls registered
    kernels and `call` directly (no `Layer.__call__` bookkeeping, ~60 us a sublayer) and
    layers read `op_kernels()` (torch's SDPA without Keras' copies to contiguous heads,
    attention projections as plain matrix products, `linear_cross_entropy` as one autograd
    function). Every kernel and op kernel is a differentiable torch call with an
    equivalence test of its value and gradients; nothing is written in place and `memo`
    lasts one step. A no-op on JAX and TensorFlow, whose steps are traced and compiled.
    Entered by `Seq2SeqLM.train_step` (not under `jit_compile`, which hands torch's step
    to torch.compile).

    Example:
    >>> with eager_training(not self.jit_compile):
    ...     logs = super().train_step(data)
    """
    return eager_decoding(enabled and keras.backend.backend() == "torch", training=True)


def _frame():
    return getattr(_STATE, "frame", None)


def active():
    """Whether the current thread is inside `eager_decoding()` (or `eager_training()`)."""
    return _frame() is not None


def op_kernels():
    """The backend's direct op kernels inside `eager_decoding()` (torch), else None."""
    frame = _frame()
    return None if frame is None else frame["ops"]


def shape(x):
    """`x.shape` inside `eager_decoding()` (concrete tensors), `ops.shape(x)` otherwise:
    Keras' op costs ~5 us of checks, a decode step reads ~35 shapes."""
    return x.shape if active() else ops.shape(x)


def eager_index(index):
    """`index` as a Python int inside `eager_decoding()` (fast slicing), else unchanged."""
    if active() and not isinstance(index, int):
        return int(index)
    return index


def memo(key, build):
    """`build()`, computed once per `eager_decoding()` block (every call outside one)."""
    frame = _frame()
    if frame is None:
        return build()
    if key not in frame["memo"]:
        frame["memo"][key] = build()
    return frame["memo"][key]


def own(tree):
    """Mark the tensors of `tree` as owned by the running decode loop (in-place writable);
    returns `tree`. Outside `eager_decoding()`, or on backends without in-place writes, a
    no-op."""
    frame = _frame()
    if frame is not None and frame["in_place"]:
        for x in keras.tree.flatten(tree):
            try:
                frame["owned"][id(x)] = weakref.ref(x)
            except TypeError:  # not weak-referenceable: stays functional
                pass
    return tree


def write_in_place(buffer, axis, start, update):
    """Write `update` into `buffer` at `start` along `axis`: in place when the decode loop
    owns `buffer` (eager torch), a functional `slice_update` otherwise."""
    frame = _frame()
    owner = None if frame is None else frame["owned"].get(id(buffer))
    if (frame is not None and frame["in_place"] and isinstance(start, int)
            and owner is not None and owner() is buffer):
        from keras_bigmodels.backend import torch_backend

        if torch_backend.write_in_place(buffer, axis, start, update):
            return buffer
    starts = [0] * len(buffer.shape)
    starts[axis] = start
    return ops.slice_update(buffer, starts, update)


def callable_directly(layer):
    """Whether `eager_decoding()` may bypass `layer.__call__` (and its weight wrappers)."""
    if not (active() and layer.built):
        return False
    policy = layer.dtype_policy
    return (policy.compute_dtype == policy.variable_dtype
            and not getattr(policy, "quantization_mode", None))


def invoke(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`; inside `eager_decoding()` its registered kernel or `call`.

    Which of the two a layer takes is decided once per block (a decode step invokes ~60
    sublayers; the checks read Keras properties, ~3 us a layer); the entry holds the layer,
    so its id cannot be reused while the block lasts.
    """
    frame = _frame()
    if frame is None:
        return layer(*args, **kwargs)
    entry = frame["dispatch"].get(id(layer))
    if entry is None:
        if not callable_directly(layer):
            return layer(*args, **kwargs)
        entry = frame["dispatch"][id(layer)] = (layer, frame["kernels"].get(type(layer)))
    kernel = entry[1]
    if kernel is not None:
        out = kernel(layer, *args, **kwargs)
        if out is not NotImplemented:
            return out
    return layer.call(*args, **kwargs)


def tensor(x):
    """The backend tensor of a Keras variable (`x` itself otherwise)."""
    return x.value if isinstance(x, keras.Variable) else x
