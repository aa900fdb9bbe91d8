"""Analytic parameter and FLOP counts, and an MFU callback.

Nothing here allocates a model: `count_params("gpt3-175b")` works on a laptop.

Training FLOPs per token follow the PaLM / nanoGPT estimate

    flops_per_token = 6 * N + 12 * L * H * Q * T

where N is the number of parameters that take part in matmuls (position tables are
excluded; a tied token table counts once, for the output projection), L layers, H heads,
Q head size and T the sequence length. 6N is 2N for the forward matmuls and 4N for the
backward; 12 L H Q T is the attention score and value products (QK^T and AV, forward and
backward), which no parameter count sees.

Families whose examples are not one token sequence (dual encoders, video-text models)
register a counter of the FLOPs of one example with `register_flops_counter`; their
`flops_per_token` is that divided by the tokens of the example (every stream's), so that
`flops_per_token * tokens` stays the work of a batch, and `flops_per_example` gives it
whole.
"""

import time

import keras

from keras_bigmodels import presets


def _get(config, key, default=None):
    value = config.get(key, default)
    return default if value is None else value


def _norm_params(config, hidden_dim):
    if _get(config, "norm", "layer_norm") == "rms_norm":
        return hidden_dim
    return 2 * hidden_dim if _get(config, "use_bias", True) else hidden_dim


def attention_params(hidden_dim, num_heads, key_dim=None, num_key_value_heads=None,
                     use_bias=True, key_value_dim=None):
    """Parameters of one `MultiHeadAttention` (query/key/value/output projections)."""
    key_dim = key_dim or hidden_dim // num_heads
    kv_heads = num_key_value_heads or num_heads
    key_value_dim = key_value_dim or hidden_dim
    q = hidden_dim * num_heads * key_dim + (num_heads * key_dim if use_bias else 0)
    kv = 2 * (key_value_dim * kv_heads * key_dim + (kv_heads * key_dim if use_bias else 0))
    out = num_heads * key_dim * hidden_dim + (hidden_dim if use_bias else 0)
    return q + kv + out


def feedforward_params(hidden_dim, intermediate_dim, gated=False, use_bias=True):
    """Parameters of one `FeedForward`."""
    inner = hidden_dim * intermediate_dim + (intermediate_dim if use_bias else 0)
    outer = intermediate_dim * hidden_dim + (hidden_dim if use_bias else 0)
    return inner * (2 if gated else 1) + outer


def block_params(config, cross_attention=False):
    """Parameters of one encoder/decoder block of a config dict."""
    hidden = config["hidden_dim"]
    use_bias = _get(config, "use_bias", True)
    attn = attention_params(
        hidden, config["num_heads"], config.get("key_dim"), config.get("num_key_value_heads"),
        use_bias,
    )
    ffn = feedforward_params(hidden, config["intermediate_dim"], _get(config, "gated", False),
                             use_bias)
    norms = 2 * _norm_params(config, hidden)
    if cross_attention:
        attn += attention_params(
            hidden, config["num_heads"], config.get("key_dim"),
            config.get("num_key_value_heads"), use_bias,
        )
        norms += _norm_params(config, hidden)
    return attn + ffn + norms


def transformer_params(config):
    """Parameters of a generic Transformer stack described by a config dict.

    Keys: vocabulary_size, hidden_dim, num_layers, num_heads, intermediate_dim, and
    optionally key_dim, num_key_value_heads, max_sequence_length, position ("learned",
    "sinusoidal", None), num_segments, embedding_dim, use_bias, gated, norm,
    embedding_layer_norm, final_norm, tie_embeddings (False adds an untied LM head).
    """
    hidden = config["hidden_dim"]
    embedding_dim = _get(config, "embedding_dim", hidden)
    total = config["vocabulary_size"] * embedding_dim
    if config.get("position", "learned") == "learned":
        total += config["max_sequence_length"] * embedding_dim
    total += _get(config, "num_segments", 0) * embedding_dim
    if _get(config, "embedding_layer_norm", False):
        total += 2 * embedding_dim
    if embedding_dim != hidden:
        total += embedding_dim * hidden + hidden
    total += config["num_layers"] * block_params(config, _get(config, "cross_attention", False))
    if _get(config, "final_norm", False):
        total += _norm_params(config, hidden)
    if not _get(config, "tie_embeddings", True):
        total += hidden * config["vocabulary_size"]
    return total


def _resolve(config):
    """(config dict, family) for a preset name or a config dict."""
    if isinstance(config, str):
        preset = presets.get_preset(config)
        return preset, preset["family"]
    if not isinstance(config, dict):
        raise ValueError(
            f"`config` must be a preset name or a config dict; received {type(config).__name__}."
        )
    return config, config.get("family")


# family -> counter(config, sequence_length) -> (training FLOPs, tokens) of one example.
_FLOPS_COUNTERS = {}


def register_flops_counter(family, counter):
    """Register how to count one training example of a family that is not one sequence.

    `counter(config, sequence_length)` returns (training FLOPs, tokens) of one example:
    forward and backward, 6 per matmul weight per token it touches plus the attention
    products (see the module docstring), and the tokens of all its streams.

    Example:
    >>> register_flops_counter("clip", clip_training_flops)
    """
    if not callable(counter):
        raise ValueError(f"`counter` must be callable; received {counter!r}.")
    _FLOPS_COUNTERS[family] = counter


def stack_flops(matmul_params, num_layers, attention_dim, tokens, key_tokens=None):
    """Training FLOPs of `tokens` tokens through a Transformer stack.

    6 * matmul_params * tokens for the weights, and 12 * num_layers * attention_dim *
    tokens * key_tokens for QK^T and AV (forward and backward), where attention_dim is
    heads x head size and key_tokens the attended length (`tokens`: self-attention).

    Example:
    >>> stack_flops(85_000_000, 12, 768, 197)  # ViT-B/16 on one 224x224 image
    """
    key_tokens = tokens if key_tokens is None else key_tokens
    return 6 * matmul_params * tokens + 12 * num_layers * attention_dim * tokens * key_tokens


def count_params(config):
    """Analytic parameter count of a preset name or config dict; never allocates.

    A dict with a `family` key (as `get_preset` returns) uses that family's counter; a
    plain dict is counted as a generic Transformer (see `transformer_params`).

    Example:
    >>> count_params("gpt2-small")
    124439808
    """
    config, family = _resolve(config)
    counter = presets.param_counter(family) if family else None
    return int(counter(config) if counter else transformer_params(config))


def flops_per_token(config, sequence_length):
    """Training FLOPs per token: 6 N + 12 L H Q T (see the module docstring).

    Example:
    >>> flops_per_token("gpt2-small", 1024) / 1e9  # about 0.85 GFLOP per token
    """
    config, family = _resolve(config)
    if family in _FLOPS_COUNTERS:
        flops, tokens = _FLOPS_COUNTERS[family](config, sequence_length)
        return flops / tokens
    n = count_params(config)
    if config.get("position", "learned") == "learned" and "max_sequence_length" in config:
        n -= config["max_sequence_length"] * _get(config, "embedding_dim", config["hidden_dim"])
    num_layers = config["num_layers"]
    num_layers += _get(config, "num_decoder_layers", 0)
    heads = config["num_heads"]
    head_dim = _get(config, "key_dim", config["hidden_dim"] // heads)
    return 6 * n + 12 * num_layers * heads * head_dim * sequence_length


def flops_per_example(config, sequence_length):
    """Training FLOPs of one example: the registered family counter's (an image-text pair
    for CLIP, a video-text pair for UniVL), else `flops_per_token * sequence_length`.

    Example:
    >>> flops_per_example("clip-vit-base-patch32", 77) / 1e9  # one image and its caption
    """
    config, family = _resolve(config)
    if family in _FLOPS_COUNTERS:
        return _FLOPS_COUNTERS[family](config, sequence_length)[0]
    return flops_per_token(config, sequence_length) * sequence_length


def measure_peak_flops(size=2048, repeats=5, dtype="float32"):
    """Measured FLOP/s of a square matmul on this backend: an honest peak for MFU on CPU."""
    a = keras.random.normal((size, size), dtype=dtype)
    b = keras.random.normal((size, size), dtype=dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])  # warm up and compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


class MFUCallback(keras.callbacks.Callback):
    """Logs tokens/s and model FLOP utilization (achieved FLOP/s over a peak) while fitting.

    The first batch of each epoch (compilation) is excluded from the epoch's rate.

    Args:
        flops_per_token: from `flops_per_token(config, sequence_length)`.
        tokens_per_batch: batch size times sequence length.
        peak_flops: the hardware peak in FLOP/s; measured with `measure_peak_flops()`
            when None (sensible on CPU; pass the datasheet number on accelerators).

    Example:
    >>> cb = MFUCallback(flops_per_token("gpt2-small", 1024), 8 * 1024, peak_flops=312e12)
    >>> model.fit(data, callbacks=[cb])  # history gains "tokens_per_second" and "mfu"
    """

    def __init__(self, flops_per_token, tokens_per_batch, peak_flops=None):
        super().__init__()
        self.flops_per_token = float(flops_per_token)
        self.tokens_per_batch = int(tokens_per_batch)
        self.peak_flops = peak_flops
        self.history = []

    def on_train_begin(self, logs=None):
        if self.peak_flops is None:
            self.peak_flops = measure_peak_flops()

    def on_epoch_begin(self, epoch, logs=None):
        self._batches = 0
        self._start = None

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches == 1:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._start is None or self._batches < 2:
            return
        seconds = time.perf_counter() - self._start
        tokens_per_second = (self._batches - 1) * self.tokens_per_batch / seconds
        mfu = tokens_per_second * self.flops_per_token / self.peak_flops
        self.history.append({"tokens_per_second": tokens_per_second, "mfu": mfu})
        if logs is not None:
            logs["tokens_per_second"] = tokens_per_second
            logs["mfu"] = mfu
