"""The backend boundary: the only package of keras_bigmodels that imports jax, tensorflow or
torch (tests/test_backend_boundary.py enforces it).

Everything else is written with `keras.ops` and asks this package for what differs per
backend:

- `compile_function(fn, variables)`: a decode loop compiled once (JAX jit over variable
  values, TensorFlow XLA function) or run eagerly with registered fast kernels (torch).
- `decoding` (module): the explicit eager-decoding contract of the torch decode loop:
  `decoding.invoke(layer, ...)`, kernels registered per layer class, op kernels, in-place
  cache writes into caches the loop owns.
- `materialize(x)`: a compiler hint for training steps (an optimization barrier on JAX).
- `image_kernels()`: torch's direct channels_last conv and group norm, and SDPA on
  strided views, for the UNet layers; JAX's conv with a matmul kernel gradient (None on
  TensorFlow).
- capability predicates (`prefers_*`): which of two equal `keras.ops` formulations is faster
  on the current backend, measured and documented where they are used.
- `read_torch_state_dict`, `mirrored_strategy`, `torch_ddp_model`, `ddp_train_step`: the
  backend-specific halves of checkpoint reading and data parallelism.
"""

import keras

from keras_bigmodels.backend import decoding  # noqa: F401


def name():
    return keras.backend.backend()


def _module():
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_bigmodels.backend import jax_backend as module
    elif backend == "tensorflow":
        from keras_bigmodels.backend import tensorflow_backend as module
    elif backend == "torch":
        from keras_bigmodels.backend import torch_backend as module
    else:
        module = None
    return module


def compile_function(fn, variables, jit_compile=True):
    """A callable running `fn(*args)` compiled; `variables` are the Keras variables it reads.

    JAX: `jax.jit` over the variables' values (a `StatelessScope` maps them in), so retrained
    weights are seen without retracing. TensorFlow: `tf.function` compiled with XLA. Torch:
    eager under `torch.no_grad()` inside `decoding.eager_decoding()` (registered kernels,
    int positions, in-place writes into the loop's own caches): for small models on CPU a
    compiled torch graph does not beat eager dispatch, and `torch.compile` costs far more
    than one generate() saves.
    """
    module = _module()
    if module is None:
        return fn
    return module.compile_function(fn, list(variables), jit_compile=jit_compile)


def materialize(x):
    """`x` computed into a buffer of its own before the next op reads it (JAX: an
    optimization barrier; identity elsewhere). See `jax_backend.materialize`."""
    if keras.backend.backend() == "jax":
        from keras_bigmodels.backend import jax_backend

        return jax_backend.materialize(x)
    return x


def prefers_fused_sparse_cross_entropy():
    """TensorFlow has a fused sparse softmax cross-entropy kernel (softmax - onehot in one
    backward pass); elsewhere -log_softmax[target] over the contiguous axis is faster."""
    return keras.backend.backend() == "tensorflow"


def prefers_erf_gelu():
    """JAX's exact gelu goes through erfc, which XLA:CPU evaluates ~3x slower than erf."""
    return keras.backend.backend() == "jax"


def prefers_blockwise_causal_attention():
    """Blockwise causal attention (skipping masked blocks) pays on JAX's XLA:CPU; TensorFlow's
    XLA was ~5% slower with blocks, torch uses its fused SDPA."""
    return keras.backend.backend() == "jax"


def prefers_matrix_projections():
    """Attention projections in a traced training/inference graph as plain [inputs, outputs]
    matrix products (the EinsumDense kernel reshaped, a view) instead of EinsumDense's
    einsum. TensorFlow lowers `btd,dnh->btnh` to a batched matmul whose kernel gradient ends
    in a separate sum over the batch; the matrix form is one matmul each way. Measured on
    the T5 benchmark config (4+4 layers, d 256, batch 16 of 128+32 tokens), CPU time per
    training step, 6 alternating rounds in one process: 0.73x on TensorFlow (1,825 against
    2,515 ms); on JAX 1.04x (XLA's dot_general takes the einsum as it is), so JAX keeps the
    einsum. Torch takes the matrix form already inside `eager_training()` /
    `eager_decoding()`. Equivalence: tests/layers/test_attention.py."""
    return keras.backend.backend() == "tensorflow"


def prefers_contracting_einsum_logits():
    """Tied-embedding logits `hidden @ table^T` as one dot contracting the table's last axis
    (`einsum("...d,vd->...v")`) instead of a matmul with the transposed table. Inside a JAX
    decode loop, when the logits feed a fused add (BART's `final_logits_bias`), XLA:CPU
    copies the transposed [hidden, vocabulary] table on every step: on the BART benchmark
    config (vocabulary 8,192, width 256) a profile of greedy batch-1 decoding put that copy
    at 1.2 of 3.4 ms a token; a loop of 32 steps in isolation took 1.45 against 0.38 ms a
    step. TensorFlow and torch take the transposed operand of a matmul as it is."""
    return keras.backend.backend() == "jax"


def prefers_heads_first_attention():
    """The UNet's attention (`ProjectedAttention`, explicit path) as batched matmuls on
    heads-first [batch, heads, length, head_dim] transposes instead of einsums over
    [batch, length, heads, head_dim]. XLA:CPU fuses the einsum form (scores, softmax and
    the value product) into one YNNPACK fusion that ran at ~7 GFLOP/s in a profile of the
    DDIM loop of bench_diffusion (16x16 level, 256 positions, 4 heads of 32: 10 ms a call,
    ~30% of the sampling step's dots). Isolated, batch 8: a 10-step loop 21.0 -> 4.8 ms a
    step, forward and backward 29.0 -> 16.2 ms. Not measured faster on TensorFlow (no
    such fusion); torch takes SDPA (`image_kernels().attention`)."""
    return keras.backend.backend() == "jax"


def supports_fused_output_loss():
    """Backends where the chunked linear cross-entropy beats the logits path (not TF's XLA)."""
    return keras.backend.backend() in ("jax", "torch")


def prefers_fused_attention():
    """Whether `keras.ops.dot_product_attention` beats explicit einsums here: torch's SDPA on
    CPU and GPU; JAX's fused call on GPU/TPU only; TensorFlow has no fused kernel."""
    backend = keras.backend.backend()
    if backend == "torch":
        return True
    if backend == "jax":
        devices = keras.distribution.list_devices()
        return not all(d.lower().startswith("cpu") for d in devices)
    return False


def image_kernels():
    """The backend's direct UNet kernels (`conv2d`, `group_norm` on channels_last images,
    `attention` on [batch, length, heads, head_dim]), or None.

    Torch only (`torch_backend.ImageOps`): Keras' torch conv copies each NHWC input to NCHW
    and back to channels_last memory and adds the bias in a separate pass, and its group
    norm is a reshape + moments; torch's own kernels read an NCHW view of the NHWC tensor
    (torch.channels_last memory format) with no copy. 1 thread, batch 8: a 3x3 64->64
    conv on 32x32 4.6 -> 2.4 ms, group norm (32 groups) 3.3 -> 0.12 ms, same outputs (the
    conv bit-equal, the norm to ~4e-6). `attention` is SDPA on strided heads-first views
    (Keras' torch `dot_product_attention` copies q, k, v contiguous on CPU).
    JAX (`jax_backend.ImageOps`): `conv2d` only (`group_norm` and `attention` are None:
    the Keras forms), XLA's conv with the kernel gradient of stride-1 convs on large images
    with many channels computed as matmuls instead of XLA:CPU's image-sized-window
    convolution (`jax_backend.ImageOps.matmul_kernel_gradient_pays`). TensorFlow compiles
    the Keras forms (None). A kernel set to None means "use the Keras form" for that layer.
    Equivalence: tests/layers/test_unet_kernels.py.
    """
    if keras.backend.backend() == "torch":
        from keras_bigmodels.backend import torch_backend

        return torch_backend.ImageOps
    if keras.backend.backend() == "jax":
        from keras_bigmodels.backend import jax_backend

        return jax_backend.ImageOps
    return None


def fused_adam_step(*args, **kwargs):
    """Keras' Adam update as one fused torch kernel (torch only; `optimizers.FusedAdamW`);
    see `torch_backend.fused_adam_step`."""
    if keras.backend.backend() != "torch":
        raise ValueError("fused_adam_step() is the PyTorch backend's fused update; the current "
                         f"backend is {keras.backend.backend()!r}.")
    from keras_bigmodels.backend import torch_backend

    return torch_backend.fused_adam_step(*args, **kwargs)


def supports_fused_adamw_update():
    """Whether `fused_adamw_update` applies here: TensorFlow, outside `tf.distribute`
    strategies (whose per-replica updates stay Keras')."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.distribute.has_strategy()


def fused_adamw_update(*args, **kwargs):
    """Keras' AdamW update of all weights as one XLA-compiled TensorFlow function (where
    `supports_fused_adamw_update()`; `optimizers.FusedAdamW`); see
    `tensorflow_backend.adam_update`."""
    if not supports_fused_adamw_update():
        raise ValueError("fused_adamw_update() is the TensorFlow backend's fused update, "
                         "outside tf.distribute strategies; the current backend is "
                         f"{keras.backend.backend()!r} (check supports_fused_adamw_update()).")
    from keras_bigmodels.backend import tensorflow_backend

    return tensorflow_backend.adam_update(*args, **kwargs)


def read_torch_state_dict(bin_file, path):
    from keras_bigmodels.backend import torch_backend

    return torch_backend.read_torch_state_dict(bin_file, path)


def mirrored_strategy(devices=None):
    if keras.backend.backend() != "tensorflow":
        raise ValueError("mirrored_strategy() is the TensorFlow backend's data parallelism; "
                         f"the current backend is {keras.backend.backend()!r}.")
    from keras_bigmodels.backend import tensorflow_backend

    return tensorflow_backend.mirrored_strategy(devices)


def torch_ddp_model(model, **kwargs):
    if keras.backend.backend() != "torch":
        raise ValueError("torch_ddp_model() is the PyTorch backend's data parallelism; "
                         f"the current backend is {keras.backend.backend()!r}.")
    from keras_bigmodels.backend import torch_backend

    return torch_backend.torch_ddp_model(model, **kwargs)


def checked_tf_dataset(dataset, prepare):
    """`dataset` with a host-side numpy check of each element (any Keras backend: the user
    already has TensorFlow loaded); see `tensorflow_backend.checked_tf_dataset`."""
    from keras_bigmodels.backend import tensorflow_backend

    return tensorflow_backend.checked_tf_dataset(dataset, prepare)


def checked_torch_dataloader(loader, check):
    """A torch `DataLoader` over `loader`'s batches, each passed to `check` first."""
    from keras_bigmodels.backend import torch_backend

    return torch_backend.checked_torch_dataloader(loader, check)


def ddp_train_step(ddp_model, model, optimizer, loss_fn, x, y):
    from keras_bigmodels.backend import torch_backend

    return torch_backend.ddp_train_step(ddp_model, model, optimizer, loss_fn, x, y)
