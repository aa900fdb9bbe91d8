"""Data and model parallelism with `keras.distribution`, from one generic rule table.

Every family is built from the same blocks, so its variables carry the same names:
attention `query|key|value|output`, feed-forward `intermediate|intermediate_gate|output`,
the token table `token_embedding`. One table of regexes over those names gives each
weight *logical* axes ("embed", "heads", "kv", "mlp", "vocab", ...), and one small map
sends logical axes to mesh axes ("model" or nothing). This is the T5X/flaxformer and
MaxText pattern, and it yields Megatron-LM's tensor parallelism: query/key/value split
along heads and the attention output along its input (heads), the feed-forward
intermediate along its output and the feed-forward output along its input, so each
block needs one all-reduce in the forward pass and one in the backward.

Two entry points:

* `layout_map(device_mesh)`: a plain `keras.distribution.LayoutMap` of the named rules
  (usable with `keras.distribution.ModelParallel` directly).
* `model_parallel(mesh_shape=(data, model))` / `data_parallel()`: build the mesh and set
  the distribution. Its variable placement is shape-aware: when a rule's dimension does
  not divide by the mesh axis (Swin's 3 heads on 4 devices, GPT-2's 50257-token vocab) the
  split moves to the largest dimension that does divide, and any other weight of rank >= 2
  that no rule names is split along its largest divisible dimension, so a family added
  later is sharded without touching this file.

Multi-host (TPU pods, GPU clusters): call `keras.distribution.initialize()` in every
process before anything else touches the backend, then `model_parallel(...)` with the
global mesh shape; see `initialize` below.

Keras 3.15 implements `keras.distribution` on JAX only. On TensorFlow use
`mirrored_strategy()` (tf.distribute data parallelism with `model.fit`), on PyTorch
`torch_ddp_model()` (DistributedDataParallel); model parallelism on those backends raises
a clear error.
"""

import math
import re
import warnings

import keras
import numpy as np

# The mesh's axis names. "model" is also what JAX's TPU splash attention kernel reads.
BATCH_AXIS = "batch"
MODEL_AXIS = "model"

# Logical axes of each named weight, one rule per kind of variable. The regexes are
# mutually exclusive (a LayoutMap raises when two keys match one path); the attention
# and feed-forward `output` kernels differ in rank, hence the lookbehind on "attention".
RULES = (
    (r".*attention/(query|key|value)/kernel", ("embed", "heads", "kv")),
    (r".*attention/(query|key|value)/bias", ("heads", "kv")),
    (r".*attention/output/kernel", ("heads", "kv", "embed")),
    (r".*/intermediate(_gate)?/kernel", ("embed", "mlp")),
    (r".*/intermediate(_gate)?/bias", ("mlp",)),
    (r".*(?<!attention)/output/kernel", ("mlp", "embed")),
    (r".*token_embedding/embeddings", ("vocab", "table_embed")),
    # ViT/Swin patch convolution [patch, patch, channels, hidden]: split its output.
    (r".*patch_projection/kernel", ("conv", "conv", "conv", "table_embed")),
    (r".*patch_projection/bias", ("table_embed",)),
    # Swin patch merging: a Dense 4C -> 2C after a norm, split along its input.
    (r".*/reduction/kernel", ("mlp", "embed")),
    (r".*relative_position_bias_table", ("relative_position", "heads")),
    # T5's bucketed relative-position tables [buckets, heads] (`RelativePositionBias`).
    (r".*relative_position_bias/embeddings", ("relative_position", "heads")),
    # CLIP's bias-free projections into the joint space [tower width, projection]: split
    # the joint width, like a token table's.
    (r".*(image|text)_projection/kernel", ("embed", "table_embed")),
)

# Logical axis -> mesh axis. Megatron splits heads and the MLP width; the residual width
# ("embed") stays whole so that activations between blocks are replicated. The token
# table is split along its width ("table_embed") rather than the vocabulary because
# real vocabularies (GPT-2's 50257) rarely divide; pass
# `axis_rules={"vocab": "model", "table_embed": None}` for a padded vocabulary.
AXIS_RULES = {
    "embed": None,
    "kv": None,
    "heads": MODEL_AXIS,
    "mlp": MODEL_AXIS,
    "vocab": None,
    "table_embed": MODEL_AXIS,
    "conv": None,
    "relative_position": None,
}


def _check_jax(what):
    backend = keras.backend.backend()
    if backend != "jax":
        hint = {
            "tensorflow": "use `keras_bigmodels.distribution.mirrored_strategy()` "
                          "(tf.distribute data parallelism) for data parallelism",
            "torch": "use `keras_bigmodels.distribution.torch_ddp_model()` "
                     "(torch DistributedDataParallel) for data parallelism",
        }.get(backend, "switch to KERAS_BACKEND=jax")
        raise ValueError(
            f"{what} needs `keras.distribution`, which Keras {keras.__version__} implements "
            f"for the JAX backend only; the current backend is {backend!r}. "
            f"Set KERAS_BACKEND=jax, or {hint}."
        )


def logical_axes(path):
    """The logical axes the rule table gives a variable path, or None when no rule names it.

    Example:
    >>> logical_axes("transformer_layer_0/self_attention/query/kernel")
    ('embed', 'heads', 'kv')
    """
    matches = [axes for pattern, axes in RULES if re.fullmatch(pattern, path)]
    if len(matches) > 1:
        raise ValueError(f"Variable {path!r} matches {len(matches)} sharding rules; "
                         "the rule regexes must be mutually exclusive.")
    return matches[0] if matches else None


def _mesh_axes(axes, axis_rules):
    rules = {**AXIS_RULES, **(axis_rules or {})}
    unknown = [a for a in axes if a not in rules]
    if unknown:
        raise ValueError(f"Unknown logical axes {unknown}; known: {sorted(rules)}.")
    return tuple(rules[a] for a in axes)


def layout_map(device_mesh, axis_rules=None):
    """The generic Megatron-style `keras.distribution.LayoutMap` of every family.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` with a "model" axis.
        axis_rules: optional overrides of `AXIS_RULES` (logical axis -> mesh axis or None).

    Example:
    >>> mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
    >>> layouts = layout_map(mesh)
    >>> layouts["transformer_layer_0/self_attention/query/kernel"].axes
    (None, 'model', None)
    """
    if MODEL_AXIS not in device_mesh.axis_names:
        raise ValueError(f"`device_mesh` needs a {MODEL_AXIS!r} axis; it has "
                         f"{device_mesh.axis_names}.")
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in RULES:
        layouts[pattern] = _mesh_axes(axes, axis_rules)
    return layouts


def fit_axes(axes, shape, mesh_sizes):
    """Mesh axes for a variable of `shape`, moving splits that do not divide.

    Each mesh axis in `axes` stays where it is when that dimension divides by the axis
    size; otherwise it moves to the largest free dimension that does (the last one on
    ties), or is dropped (replicated). `axes=None` (no rule) treats the variable as
    unnamed: rank >= 2 weights are split on the model axis, everything else replicated.

    Example:
    >>> fit_axes((None, "model", None), (96, 3, 32), {"model": 4})
    ('model', None, None)
    """
    shape = tuple(int(d) for d in shape)
    if axes is None:
        if len(shape) < 2 or MODEL_AXIS not in mesh_sizes:
            return (None,) * len(shape)
        axes = (None,) * (len(shape) - 1) + (MODEL_AXIS,)
    axes = tuple(axes)[:len(shape)] + (None,) * max(0, len(shape) - len(axes))
    fitted = [None] * len(shape)
    for dim, axis in enumerate(axes):
        if axis is not None and shape[dim] % mesh_sizes[axis] == 0:
            fitted[dim] = axis
    for dim, axis in enumerate(axes):
        if axis is None or fitted[dim] == axis:
            continue
        free = [d for d in range(len(shape))
                if fitted[d] is None and shape[d] % mesh_sizes[axis] == 0 and shape[d] > 1]
        if free:
            fitted[max(free, key=lambda d: (shape[d], d))] = axis
    return tuple(fitted)


def _check_batch(distribution, data_shape):
    if not data_shape or data_shape[0] is None:
        return
    sizes = dict(zip(distribution.device_mesh.axis_names, distribution.device_mesh.shape))
    replicas = sizes[distribution.batch_dim_name]
    global_batch = int(data_shape[0]) * distribution.num_processes
    if global_batch % replicas:
        raise ValueError(
            f"The batch size ({global_batch} over {distribution.num_processes} process(es)) "
            f"must be divisible by the mesh's {distribution.batch_dim_name!r} axis "
            f"({replicas} replicas). Use a batch size that is a multiple of {replicas} "
            "(e.g. `drop_remainder=True` on the last partial batch)."
        )


class ShardedModelParallel(keras.distribution.ModelParallel):
    """`ModelParallel` whose layouts follow the rule table and fit each variable's shape.

    Args:
        layout_map: from `layout_map(device_mesh)`.
        batch_dim_name: the data axis ("batch").
        auto_shard_dataset: False when every process already feeds its own data shard.
        shard_unnamed: split rank >= 2 weights no rule names along their largest
            divisible dimension (True), or replicate them (False).
    """

    def __init__(self, *, layout_map, batch_dim_name=BATCH_AXIS, auto_shard_dataset=True,
                 shard_unnamed=True, **kwargs):
        super().__init__(layout_map=layout_map, batch_dim_name=batch_dim_name,
                         auto_shard_dataset=auto_shard_dataset, **kwargs)
        self.shard_unnamed = shard_unnamed
        self._sizes = dict(zip(self.device_mesh.axis_names, self.device_mesh.shape))
        # (path, shape) of every variable a rule splits but no dimension of which divides
        # by the mesh axis: each device then holds all of it.
        self.replicated_variables = []
        self._warned_kinds = set()

    def get_variable_layout(self, variable):
        if getattr(variable, "_layout", None) is not None:
            return variable._layout
        layout = self._layout_map[variable.path]
        if layout is None and not self.shard_unnamed:
            axes = (None,) * len(variable.shape)
        else:
            axes = fit_axes(layout.axes if layout is not None else None, variable.shape,
                            self._sizes)
            if layout is not None:
                self._note_replicated(variable, layout.axes, axes)
        return keras.distribution.TensorLayout(axes, self.device_mesh)

    def _note_replicated(self, variable, wanted, fitted):
        dropped = [a for a in wanted if a is not None and a not in fitted
                   and self._sizes.get(a, 1) > 1]
        if not dropped:
            return
        shape = tuple(int(d) for d in variable.shape)
        self.replicated_variables.append((variable.path, shape))
        kind = (logical_axes(variable.path), shape)
        if kind in self._warned_kinds:
            return
        self._warned_kinds.add(kind)
        sizes = ", ".join(f"{a!r} axis ({self._sizes[a]})" for a in dropped)
        warnings.warn(
            f"`{variable.path}` {shape} is replicated on every device: none of its "
            f"dimensions divides by the mesh's {sizes}, so the split its rule asks for "
            "is dropped. Variables of the same kind and shape are replicated too "
            "(`distribution.replicated_variables` lists them all). Use a model axis that "
            "divides num_heads and intermediate_dim, or pass `model=` to model_parallel() "
            "to check them before building.",
            stacklevel=2,
        )

    def get_data_layout(self, data_shape):
        _check_batch(self, data_shape)
        return super().get_data_layout(data_shape)


class CheckedDataParallel(keras.distribution.DataParallel):
    """`DataParallel` that rejects a batch the data axis does not divide, before Keras."""

    def get_data_layout(self, data_shape):
        _check_batch(self, data_shape)
        return super().get_data_layout(data_shape)


def _devices(num_devices):
    devices = keras.distribution.list_devices()
    if num_devices > len(devices):
        raise ValueError(
            f"The mesh needs {num_devices} devices but {len(devices)} are visible "
            f"({devices[:4]}...). On CPU, simulate devices with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts."
        )
    return devices[:num_devices]


def data_parallel(auto_shard_dataset=True):
    """Replicate the model on every device and split each batch; sets and returns it.

    Args:
        auto_shard_dataset: False in multi-process runs where each process already reads
            its own shard of the data.

    Example:
    >>> distribution = data_parallel()   # then build, compile and fit the model
    """
    _check_jax("data_parallel()")
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((len(devices),), (BATCH_AXIS,), devices)
    distribution = CheckedDataParallel(device_mesh=mesh, auto_shard_dataset=auto_shard_dataset)
    keras.distribution.set_distribution(distribution)
    return distribution


def _model_dims(model):
    """(name, size) of the dimensions a model-axis split will cut, from a preset/config."""
    from keras_bigmodels import presets

    config = presets.get_preset(model) if isinstance(model, str) else dict(model)
    dims = []
    for key in ("num_heads", "num_key_value_heads", "intermediate_dim", "hidden_dim"):
        value = config.get(key)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v:
                dims.append((key, int(v)))
    return dims


def model_parallel(mesh_shape=(1, None), model=None, axis_rules=None,
                   auto_shard_dataset=True, shard_unnamed=True, devices=None):
    """Split weights over a (data x model) mesh with the generic rule table; sets it.

    Call it before any model is built: variables are placed when they are created.

    Args:
        mesh_shape: (data, model) device counts; None in one entry takes the remaining
            devices. The product must equal the number of visible devices (or of
            `devices`): a mesh that leaves devices idle is refused.
        model: optional preset name or config dict; when given, its head count and
            feed-forward width are checked against the model axis, and a split that
            would fall back from Megatron's layout is reported as an error early.
        axis_rules: optional overrides of `AXIS_RULES`.
        auto_shard_dataset: False when every process feeds its own data shard.
        shard_unnamed: see `ShardedModelParallel`.
        devices: the devices of the mesh, to use fewer than all on purpose (default:
            every visible device).

    A rule's split that no dimension of a variable divides is dropped and the variable
    replicated (a `UserWarning` names it; `distribution.replicated_variables` lists all).

    Returns:
        The `ShardedModelParallel` distribution that is now set.

    Example:
    >>> distribution = model_parallel(mesh_shape=(2, 4))
    >>> lm = GPTCausalLM.from_preset("gpt2-small")      # weights created sharded
    """
    _check_jax("model_parallel()")
    if len(mesh_shape) != 2:
        raise ValueError(f"`mesh_shape` must be (data, model); received {mesh_shape}.")
    visible = keras.distribution.list_devices()
    count = len(visible) if devices is None else len(devices)
    data, width = mesh_shape
    if data is None and width is None:
        raise ValueError("`mesh_shape` may leave only one of (data, model) as None.")
    if data is None:
        data = count // width
    if width is None:
        width = count // data
    for name, value in (("data", data), ("model", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`mesh_shape` {name} size must be a positive int; "
                             f"received {mesh_shape}.")
    if model is not None:
        bad = [f"{name}={size}" for name, size in _model_dims(model)
               if name in ("num_heads", "intermediate_dim") and size % width]
        if bad:
            raise ValueError(
                f"The model axis ({width}) must divide the heads and feed-forward width "
                f"for Megatron-style splits; {model if isinstance(model, str) else 'config'}"
                f" has {', '.join(bad)}. Pick a model axis that divides them."
            )
    if data * width != count and (devices is not None or data * width < count):
        source = "`devices`" if devices is not None else "visible devices"
        meshes = [(count // m, m) for m in range(count, 1, -1) if count % m == 0]
        raise ValueError(
            f"`mesh_shape` ({data}, {width}) uses {data * width} of the {count} {source}. "
            f"Use a mesh over all of them, e.g. {', '.join(map(str, meshes[:3]))}"
            + ("" if devices is not None else
               f", or pass `devices=keras.distribution.list_devices()[:{data * width}]` "
               "to leave the others idle on purpose") + "."
        )
    mesh = keras.distribution.DeviceMesh((data, width), (BATCH_AXIS, MODEL_AXIS),
                                         list(devices) if devices is not None
                                         else _devices(data * width))
    distribution = ShardedModelParallel(
        layout_map=layout_map(mesh, axis_rules), batch_dim_name=BATCH_AXIS,
        auto_shard_dataset=auto_shard_dataset, shard_unnamed=shard_unnamed,
    )
    keras.distribution.set_distribution(distribution)
    return distribution


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Join a multi-host job; call first in every process, before any model or data.

    A thin, documented pass-through to `keras.distribution.initialize`. On Cloud TPU all
    three arguments may be None (read from the TPU environment); elsewhere give the
    coordinator's "host:port", the process count and this process's id (0 is the
    coordinator). Each process then sees every device of the job in
    `keras.distribution.list_devices()`, builds the same global mesh with
    `model_parallel(...)`, and feeds its own slice of every global batch (pass
    `auto_shard_dataset=False` when the input pipeline already shards by process).

    Example (two hosts, run on each with its own PROCESS_ID):
    >>> initialize("10.0.0.1:1234", num_processes=2, process_id=PROCESS_ID)
    >>> model_parallel(mesh_shape=(2, 8), auto_shard_dataset=False)
    """
    _check_jax("initialize()")
    keras.distribution.initialize(job_addresses=job_addresses, num_processes=num_processes,
                                  process_id=process_id)


def describe(model, distribution=None):
    """Lines "path shape -> mesh axes (elements per device)" for every weight of a model.

    Example:
    >>> print("\\n".join(describe(model)))
    """
    lines = []
    for variable in model.weights:
        value = variable.value
        sharding = getattr(value, "sharding", None)
        spec = getattr(sharding, "spec", None)
        shards = getattr(value, "addressable_shards", None)
        local = int(np.prod(shards[0].data.shape)) if shards else int(np.prod(variable.shape))
        axes = tuple(spec) if spec is not None else ()
        lines.append(f"{variable.path:60s} {str(tuple(variable.shape)):18s} "
                     f"-> {str(axes):32s} {local}/{math.prod(variable.shape)} per device")
    return lines


def mirrored_strategy(devices=None):
    """TensorFlow's data parallelism: a `tf.distribute.MirroredStrategy` for `model.fit`.

    Build and compile the model inside `strategy.scope()`, then fit as usual; the global
    batch is split over the devices and gradients are all-reduced.

    Example:
    >>> strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])
    >>> with strategy.scope():
    ...     model = build(); model.compile("sgd", "mse")
    >>> model.fit(x, y, batch_size=8)
    """
    from keras_bigmodels import backend

    return backend.mirrored_strategy(devices)


def torch_ddp_model(model, **kwargs):
    """PyTorch's data parallelism: wrap a Keras model (a torch module) in DDP.

    The process group must be initialized first (`torch.distributed.init_process_group`,
    "gloo" on CPU, "nccl" on GPU). See `keras_bigmodels.backend.ddp_train_step`.

    Example:
    >>> ddp = torch_ddp_model(model)
    >>> loss = ddp_train_step(ddp, model, optimizer, loss_fn, x_shard, y_shard)
    """
    from keras_bigmodels import backend

    return backend.torch_ddp_model(model, **kwargs)


from keras_bigmodels.memory import plan_memory  # noqa: E402,F401
