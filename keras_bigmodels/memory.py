"""Analytic memory per device of a Transformer on a (data x model) mesh; never allocates.

Parameters come from `flops.count_params` (the family's exact analytic counter). Under
`model_parallel`'s layouts the block kernels (with the query/key/value and intermediate
biases) and the token, position and segment tables are split over the model axis and
the rest (norms, output biases) is replicated (exact for GPT, checked in the tests); the
data axis replicates everything (Keras' `ModelParallel` does not shard optimizer state
over the data axis, i.e. no ZeRO).

Activations per layer follow Korthikanti et al. 2022 ("Reducing Activation Recomputation
in Large Transformer Models", Sec. 4, 16-bit activations): without recomputation a layer
keeps s b h (10 + 24 / t + 5 a s / (h t)) bytes, with full recomputation only its input,
2 s b h bytes, where s is the sequence length, b the batch per model replica, h the
width, a the heads and t the model-axis size. The 5 a s / h term is the attention score
matrix; a fused (flash) attention kernel does not keep it (`fused_attention=True`).
"""

import dataclasses

from keras_bigmodels import flops, presets

GIB = 1024**3
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "lion": 1, "sgd_momentum": 1, "sgd": 0}


@dataclasses.dataclass
class MemoryPlan:
    """Bytes per device of one training step (see `plan_memory`)."""

    preset: str
    mesh_shape: tuple
    batch_size: int
    sequence_length: int
    num_params: int
    parameters: float
    gradients: float
    optimizer_state: float
    activations: float
    activations_remat: float
    logits: float

    @property
    def total(self):
        return (self.parameters + self.gradients + self.optimizer_state + self.activations
                + self.logits)

    @property
    def total_remat(self):
        return (self.parameters + self.gradients + self.optimizer_state
                + self.activations_remat + self.logits)

    def fits(self, device_memory_gib, remat=True):
        """Whether the step fits a device of `device_memory_gib` GiB."""
        return (self.total_remat if remat else self.total) <= device_memory_gib * GIB

    def __str__(self):
        rows = [("parameters", self.parameters), ("gradients", self.gradients),
                ("optimizer state", self.optimizer_state),
                ("activations", self.activations),
                ("activations (remat)", self.activations_remat),
                ("logits", self.logits), ("total", self.total),
                ("total (remat)", self.total_remat)]
        head = (f"{self.preset}: {self.num_params / 1e9:.2f}B parameters on a "
                f"{self.mesh_shape[0]}x{self.mesh_shape[1]} (data x model) mesh, batch "
                f"{self.batch_size} x {self.sequence_length} tokens; GiB per device:")
        return "\n".join([head] + [f"  {name:22s} {value / GIB:12.2f}" for name, value in rows])


def _config(preset):
    if isinstance(preset, str):
        import keras_bigmodels.models  # noqa: F401  (families register their presets)

        return presets.get_preset(preset), preset
    if not isinstance(preset, dict):
        raise ValueError(f"`preset` must be a preset name or a config dict; received "
                         f"{type(preset).__name__}.")
    return dict(preset), preset.get("name", "config")


def _sharded_params(config):
    """Parameters the layout map splits over the model axis (block kernels, token table)."""
    hidden = config["hidden_dim"]
    heads = config["num_heads"]
    key_dim = config.get("key_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    gates = 2 if config.get("gated") else 1
    attention = hidden * key_dim * (2 * heads + 2 * kv_heads)
    feedforward = hidden * config["intermediate_dim"] * (gates + 1)
    if config.get("use_bias", True):  # query/key/value and intermediate biases split too
        attention += key_dim * (heads + 2 * kv_heads)
        feedforward += config["intermediate_dim"] * gates
    layers = config["num_layers"] + (config.get("num_decoder_layers") or 0)
    # Token, learned-position and segment tables: the token table by its rule, the others
    # by the shape-aware fallback for unnamed weights (model_parallel's default).
    rows = config.get("vocabulary_size", 0) + (config.get("num_segments") or 0)
    if config.get("position", "learned") == "learned":
        rows += config.get("max_sequence_length") or 0
    return layers * (attention + feedforward) + rows * (config.get("embedding_dim") or hidden)


def plan_memory(preset, mesh_shape, batch_size, sequence_length, optimizer="adam",
                param_bytes=4, activation_bytes=2, fused_attention=False):
    """Memory per device (bytes) to train a preset on a (data, model) mesh.

    Args:
        preset: a preset name (e.g. "gpt3-175b") or a config dict with `hidden_dim`,
            `num_layers`, `num_heads`, `intermediate_dim` (and `vocabulary_size`).
        mesh_shape: (data, model) device counts.
        batch_size: global batch (sequences), split over the data axis.
        sequence_length: tokens per sequence (patches + 1 for ViT).
        optimizer: one of "adam", "adamw", "lion", "sgd_momentum", "sgd".
        param_bytes: bytes per weight, gradient and optimizer slot (4: float32 variables,
            also under mixed precision).
        activation_bytes: bytes per activation (2: bfloat16 mixed precision).
        fused_attention: True when a flash-style kernel avoids storing the scores.

    Returns:
        A `MemoryPlan`; `print(plan)` shows GiB per device, `plan.fits(80)` checks it.

    Example:
    >>> print(plan_memory("gpt3-175b", mesh_shape=(8, 64), batch_size=64,
    ...                   sequence_length=2048))
    """
    config, name = _config(preset)
    missing = [k for k in ("hidden_dim", "num_layers", "num_heads", "intermediate_dim")
               if not isinstance(config.get(k), int)]
    if missing:
        raise ValueError(f"plan_memory covers Transformer stacks with integer {missing}; "
                         f"{name!r} does not have them.")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"`optimizer` must be one of {sorted(OPTIMIZER_STATES)}; "
                         f"received {optimizer!r}.")
    data, model = (int(v) for v in mesh_shape)
    if data < 1 or model < 1:
        raise ValueError(f"`mesh_shape` must be two positive ints; received {mesh_shape}.")
    if batch_size % data:
        raise ValueError(f"`batch_size` ({batch_size}) must be divisible by the data axis "
                         f"({data}).")
    num_params = flops.count_params(config)
    sharded = min(_sharded_params(config), num_params)
    params_per_device = sharded / model + (num_params - sharded)

    s, b, h = sequence_length, batch_size // data, config["hidden_dim"]
    a, t = config["num_heads"], model
    layers = config["num_layers"] + (config.get("num_decoder_layers") or 0)
    scale = activation_bytes / 2  # the paper's constants are for 16-bit activations
    scores = 0 if fused_attention else 5 * a * s / (h * t)
    activations = layers * s * b * h * (10 + 24 / t + scores) * scale
    activations_remat = layers * 2 * s * b * h * scale
    # float32 logits and their gradient; the table is split along its width, so every
    # device holds the full vocabulary row of its batch.
    logits = 2 * 4 * s * b * config.get("vocabulary_size", 0)
    return MemoryPlan(
        preset=name, mesh_shape=(data, model), batch_size=batch_size,
        sequence_length=sequence_length, num_params=num_params,
        parameters=params_per_device * param_bytes,
        gradients=params_per_device * param_bytes,
        optimizer_state=params_per_device * param_bytes * OPTIMIZER_STATES[optimizer],
        activations=activations, activations_remat=activations_remat, logits=logits,
    )
