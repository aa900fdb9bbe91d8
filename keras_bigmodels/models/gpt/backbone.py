"""GPT backbone: token + learned position embeddings, a stack of causal decoder blocks."""

import math

import keras
from keras import ops

from keras_bigmodels.layers.attention import MASK_VALUE
from keras_bigmodels.layers.embeddings import TransformerEmbedding
from keras_bigmodels.layers.transformer import TransformerDecoderBlock, make_norm
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.utils import check_transformer_dims


def banded_attention_bias(query_length, key_length, window, offset=0):
    """Additive [1, 1, q, k] bias letting query i see only keys j > offset + i - window.

    Combined with the causal mask this is GPT-3's locally banded attention: each token
    attends to itself and the `window - 1` tokens before it.
    """
    rows = ops.arange(query_length)[:, None] + offset
    cols = ops.arange(key_length)[None, :]
    inside = ops.less(rows - cols, window)
    return ops.where(inside, 0.0, MASK_VALUE)[None, None, :, :]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BandedAttentionBias(keras.layers.Layer):
    """The banded bias for a [batch, length, hidden] input (a parameter-free mask)."""

    def __init__(self, window, **kwargs):
        super().__init__(**kwargs)
        self.window = window

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        return banded_attention_bias(length, length, self.window)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((1, 1, inputs.shape[1], inputs.shape[1]), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "window": self.window}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class GPTBackbone(Backbone):
    """Decoder-only Transformer of GPT (post-norm) and GPT-2/GPT-3 (pre-norm).

    Args:
        vocabulary_size: number of token ids.
        num_layers: decoder blocks.
        num_heads: attention heads per block.
        hidden_dim: model width (d_model).
        intermediate_dim: feed-forward width (4 * hidden_dim in every paper config).
        max_sequence_length: learned positions (context length).
        key_dim: head size; defaults to hidden_dim // num_heads.
        normalize_first: True for GPT-2/3 (pre-norm + final layer norm + residual
            projections initialized with std 0.02 / sqrt(2 * num_layers)); False for GPT-1
            (post-norm, no final norm).
        activation: feed-forward activation ("gelu_approximate" is GPT-2's gelu_new).
        dropout: residual, embedding and attention dropout.
        layer_norm_epsilon: epsilon of every layer norm.
        local_attention_window: when set, odd layers (1, 3, ...) use GPT-3's locally
            banded causal attention of this width; even layers stay dense.
        initializer_range: std of the normal initializer of every kernel and table.
        dtype: dtype policy.

    Example:
    >>> backbone = GPTBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                        hidden_dim=32, intermediate_dim=64, max_sequence_length=16)
    >>> backbone(keras.ops.ones((2, 8), "int32")).shape
    (2, 8, 32)
    """

    family = "gpt"
    config_keys = (
        "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
        "max_sequence_length", "key_dim", "normalize_first", "activation", "dropout",
        "layer_norm_epsilon", "local_attention_window", "initializer_range",
        "use_fused_attention",
    )
    huggingface_mapping = "keras_bigmodels.models.gpt.huggingface"

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                 max_sequence_length=1024, key_dim=None, normalize_first=True,
                 activation="gelu_approximate", dropout=0.1, layer_norm_epsilon=1e-5,
                 local_attention_window=None, initializer_range=0.02, use_fused_attention=None,
                 dtype=None, **kwargs):
        check_transformer_dims(
            key_dim, vocabulary_size=vocabulary_size, num_layers=num_layers,
            num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            local_attention_window=local_attention_window)
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        # GPT-2 Sec. 2.3: residual projections scaled by 1/sqrt(N) for N residual layers.
        output_init = keras.initializers.RandomNormal(
            stddev=initializer_range / math.sqrt(2 * num_layers) if normalize_first
            else initializer_range
        )

        embedding = TransformerEmbedding(
            vocabulary_size, hidden_dim, max_sequence_length=max_sequence_length,
            position="learned", layer_norm=False, dropout=dropout, initializer=init,
            dtype=dtype, name="embedding",
        )
        transformer_layers = [
            TransformerDecoderBlock(
                num_heads=num_heads, intermediate_dim=intermediate_dim, key_dim=key_dim,
                activation=activation, dropout=dropout, normalize_first=normalize_first,
                layer_norm_epsilon=layer_norm_epsilon, use_fused_attention=use_fused_attention,
                kernel_initializer=init, output_kernel_initializer=output_init,
                dtype=dtype, name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        final_norm = (
            make_norm("layer_norm", layer_norm_epsilon, "final_norm", dtype)
            if normalize_first else None
        )
        band_bias = (
            BandedAttentionBias(local_attention_window, dtype=dtype, name="band_bias")
            if local_attention_window else None
        )

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = embedding(token_ids)
        bias = band_bias(x) if band_bias is not None else None
        for i, block in enumerate(transformer_layers):
            x = block(x, self_attention_bias=bias if bias is not None and i % 2 else None)
        if final_norm is not None:
            x = final_norm(x)
        # torch modules refuse attributes before Model.__init__, so layers are set after.
        super().__init__(inputs=token_ids, outputs=x, dtype=dtype, **kwargs)
        self.embedding = embedding
        self.transformer_layers = transformer_layers
        self.final_norm = final_norm
        self.band_bias = band_bias

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.key_dim = key_dim
        self.normalize_first = normalize_first
        self.activation = activation
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.local_attention_window = local_attention_window
        self.initializer_range = initializer_range
        self.use_fused_attention = use_fused_attention

    def _is_banded(self, index):
        return self.band_bias is not None and index % 2 == 1

    @property
    def token_embedding(self):
        return self.embedding.token_embedding

    @property
    def head_dim(self):
        return self.key_dim or self.hidden_dim // self.num_heads

    def initial_cache(self, batch_size, max_length, dtype=None):
        """A zero KV cache: one [batch, 2, heads, max_length, head_dim] tensor per layer."""
        shape = (batch_size, 2, self.num_heads, max_length, self.head_dim)
        return [ops.zeros(shape, dtype or self.compute_dtype) for _ in range(self.num_layers)]

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Hidden states of `token_ids` at positions `cache_update_index...`, and the cache.

        Args:
            token_ids: [batch, length] ids written at `cache_update_index`.
            cache: list from `initial_cache` (or a previous call).
            cache_update_index: int or scalar tensor, position of the first token.
        """
        x = invoke(self.embedding, token_ids, start_index=cache_update_index)
        new_cache = []
        for i, block in enumerate(self.transformer_layers):
            bias = None
            if self._is_banded(i):
                bias = banded_attention_bias(
                    ops.shape(token_ids)[1], ops.shape(cache[i])[3],
                    self.local_attention_window, offset=cache_update_index,
                )
            x, layer_cache = invoke(block, x, self_attention_bias=bias, cache=cache[i],
                                    cache_update_index=cache_update_index)
            new_cache.append(layer_cache)
        if self.final_norm is not None:
            x = invoke(self.final_norm, x)
        return x, new_cache
