"""Input embeddings: tokens (tied output), token+position+segment, factorized, patches."""

import keras
from keras import ops

from keras_bigmodels import backend
from keras_bigmodels.backend.decoding import active as in_eager_decoding
from keras_bigmodels.backend.decoding import invoke, memo, op_kernels
from keras_bigmodels.layers.positions import PositionEmbedding, SinusoidalPositionEncoding
from keras_bigmodels.utils import check_in, check_positive_int, check_token_ids


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class TokenEmbedding(keras.layers.Embedding):
    """A token table that can also project hidden states back to vocabulary logits.

    `layer(ids)` looks ids up; `layer(hidden, reverse=True)` returns `hidden @ E^T`, the
    tied output layer of BERT's MLM head and GPT's LM head.

    Example:
    >>> emb = TokenEmbedding(100, 16)
    >>> emb(emb(keras.ops.ones((2, 3), "int32")), reverse=True).shape
    (2, 3, 100)
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        check_positive_int("vocabulary_size", input_dim)
        check_positive_int("hidden_dim", output_dim)
        super().__init__(input_dim, output_dim, **kwargs)

    def call(self, inputs, reverse=False, training=None):
        if reverse:
            kernels = op_kernels()
            if kernels is not None and self.compute_dtype == self.variable_dtype:
                # The product with the transposed view of the table, as transformers'
                # tied head reads it. A contiguous transposed copy made the one-row product
                # ~12% faster (207 vs 235 us for 1 x 256 x 8192, 2 threads) but cost 2-3 ms
                # a generate() (an 8 MB strided copy), more than 32 tokens win back; on
                # several rows the view was as fast (0.60 vs 0.66 ms, 8 rows, 1 thread).
                # (An earlier AMD host had measured the view ~3x slower for one row; not
                # re-measured there.)
                table = memo((id(self), "transposed_view"),
                             lambda: ops.transpose(self.embeddings.value))
                return kernels.linear(inputs, table)
            kernel = ops.cast(self.embeddings, self.compute_dtype)
            if backend.prefers_contracting_einsum_logits():
                return ops.einsum("...d,vd->...v", inputs, kernel)
            return ops.matmul(inputs, ops.transpose(kernel))
        # Inside a decode loop the ids are the checked prompt or the model's own samples.
        if not training and not in_eager_decoding():
            check_token_ids(inputs, self.input_dim)
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse=False, training=None):
        if reverse:
            return keras.KerasTensor(inputs.shape[:-1] + (self.input_dim,),
                                     dtype=self.compute_dtype)
        return keras.KerasTensor(inputs.shape + (self.output_dim,), dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class TransformerEmbedding(keras.layers.Layer):
    """Token + position (+ segment) embeddings, optionally factorized, normed, dropped out.

    Args:
        vocabulary_size: number of token ids.
        hidden_dim: output width.
        max_sequence_length: learned positions available.
        num_segments: segment (token type) ids; 0 for none.
        embedding_dim: ALBERT's factorized size E < H; the sum is projected to
            `hidden_dim` by `embedding_projection`. Defaults to `hidden_dim`.
        position: "learned", "sinusoidal" or None.
        position_offset: index of the first real position (RoBERTa's is 2).
        layer_norm: apply a LayerNorm to the sum (BERT) or not (GPT-2).
        layer_norm_epsilon: its epsilon.
        dropout: dropout on the output.
        scale: multiply token embeddings by sqrt(hidden_dim) (original Transformer).
        initializer: initializer of the tables.

    Call args:
        token_ids: [batch, length] ints.
        segment_ids: [batch, length] ints, when `num_segments > 0`.
        start_index: position of the first token (incremental decoding).
        position_ids: optional [batch, length] explicit rows of the learned position table
            (RoBERTa numbers positions from its non-padding tokens); overrides `start_index`.

    Example:
    >>> layer = TransformerEmbedding(100, 16, max_sequence_length=8, num_segments=2)
    >>> ids = keras.ops.ones((2, 5), "int32")
    >>> layer(ids, segment_ids=ids).shape
    (2, 5, 16)
    """

    def __init__(self, vocabulary_size, hidden_dim, max_sequence_length=512, num_segments=0,
                 embedding_dim=None, position="learned", position_offset=0, layer_norm=True,
                 layer_norm_epsilon=1e-12, dropout=0.0, scale=False,
                 initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("max_sequence_length", max_sequence_length)
        check_in("position", position, ("learned", "sinusoidal", None))
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.embedding_dim = embedding_dim
        self.position = position
        self.position_offset = position_offset
        self.layer_norm = layer_norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.scale = scale
        self.initializer = keras.initializers.get(initializer)

    def build(self, token_ids_shape, segment_ids_shape=None):
        dim = self.embedding_dim or self.hidden_dim
        self.token_embedding = TokenEmbedding(
            self.vocabulary_size, dim, embeddings_initializer=self.initializer,
            dtype=self.dtype_policy, name="token_embedding",
        )
        self.token_embedding.build(token_ids_shape)
        embedded_shape = tuple(token_ids_shape) + (dim,)
        if self.position == "learned":
            self.position_embedding = PositionEmbedding(
                self.max_sequence_length + self.position_offset, initializer=self.initializer,
                dtype=self.dtype_policy, name="position_embedding",
            )
            self.position_embedding.build(embedded_shape)
        elif self.position == "sinusoidal":
            self.position_embedding = SinusoidalPositionEncoding(
                dtype=self.dtype_policy, name="position_embedding"
            )
        if self.num_segments:
            self.segment_embedding = keras.layers.Embedding(
                self.num_segments, dim, embeddings_initializer=self.initializer,
                dtype=self.dtype_policy, name="segment_embedding",
            )
            self.segment_embedding.build(token_ids_shape)
        if self.layer_norm:
            self.embedding_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="embedding_norm"
            )
            self.embedding_norm.build(embedded_shape)
        if self.embedding_dim and self.embedding_dim != self.hidden_dim:
            self.embedding_projection = keras.layers.Dense(
                self.hidden_dim, kernel_initializer=self.initializer,
                dtype=self.dtype_policy, name="embedding_projection",
            )
            self.embedding_projection.build(embedded_shape)
        else:
            self.embedding_projection = None
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, token_ids, segment_ids=None, start_index=0, position_ids=None, training=None):
        length = token_ids.shape[1]
        if isinstance(start_index, int) and length is not None and self.position == "learned":
            if length + start_index > self.max_sequence_length:
                raise ValueError(
                    f"`token_ids` has length {length + start_index}, longer than "
                    f"max_sequence_length={self.max_sequence_length}; truncate the input or "
                    "use a model with a larger `max_sequence_length`."
                )
        x = invoke(self.token_embedding, token_ids, training=training)
        if self.scale:
            x = x * ops.cast(ops.sqrt(float(self.embedding_dim or self.hidden_dim)), x.dtype)
        if position_ids is not None and self.position == "learned":
            table = ops.cast(self.position_embedding.embeddings, x.dtype)
            x = x + ops.take(table, ops.cast(position_ids, "int32"), axis=0)
        elif self.position is not None:
            x = x + invoke(self.position_embedding, x,
                           start_index=start_index + self.position_offset)
        if self.num_segments:
            if segment_ids is None:
                segment_ids = ops.zeros_like(token_ids)
            elif not training and not in_eager_decoding():
                # Out of range, a segment id reads NaN (JAX), fails without the argument's
                # name (TensorFlow, PyTorch) or, inside compiled steps, clamps silently.
                check_token_ids(segment_ids, self.num_segments, name="segment_ids",
                                size_name="num_segments")
            x = x + invoke(self.segment_embedding, segment_ids)
        if self.layer_norm:
            x = invoke(self.embedding_norm, x)
        if self.embedding_projection is not None:
            x = invoke(self.embedding_projection, x)
        return invoke(self.dropout_layer, x, training=training)

    def compute_output_spec(self, token_ids, segment_ids=None, start_index=0, position_ids=None,
                            training=None):
        return keras.KerasTensor(token_ids.shape + (self.hidden_dim,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            max_sequence_length=self.max_sequence_length,
            num_segments=self.num_segments,
            embedding_dim=self.embedding_dim,
            position=self.position,
            position_offset=self.position_offset,
            layer_norm=self.layer_norm,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            scale=self.scale,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class PatchEmbedding(keras.layers.Layer):
    """Split an image into non-overlapping patches and project each (ViT's first layer).

    A strided convolution, named `patch_projection`, equal to a Dense on flattened patches.

    Args:
        patch_size: int or (height, width) of a patch.
        hidden_dim: projection width.
        use_bias: bias of the projection.
        flatten: return [batch, num_patches, hidden] (True) or the [batch, h, w, hidden] grid.

    Example:
    >>> PatchEmbedding(4, 16)(keras.ops.zeros((2, 8, 8, 3))).shape
    (2, 4, 16)
    """

    def __init__(self, patch_size, hidden_dim, use_bias=True, flatten=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        for p in patch:
            check_positive_int("patch_size", p)
        check_positive_int("hidden_dim", hidden_dim)
        self.patch_size = patch
        self.hidden_dim = hidden_dim
        self.use_bias = use_bias
        self.flatten = flatten
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _check_image(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"Images must be channels-last [batch, height, width, channels]; received "
                f"shape {tuple(shape)}."
            )
        for size, patch, name in zip(shape[1:3], self.patch_size, ("height", "width")):
            if size is not None and size % patch:
                raise ValueError(
                    f"Image {name} {size} is not divisible by patch_size {patch}; resize the "
                    f"images to a multiple of {patch}."
                )

    def build(self, input_shape):
        self._check_image(input_shape)
        self.patch_projection = keras.layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size, padding="valid",
            use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            data_format="channels_last", dtype=self.dtype_policy, name="patch_projection",
        )
        self.patch_projection.build(input_shape)
        self.built = True

    def call(self, images):
        self._check_image(images.shape)
        x = self.patch_projection(images)
        if self.flatten:
            shape = ops.shape(x)
            x = ops.reshape(x, (shape[0], shape[1] * shape[2], self.hidden_dim))
        return x

    def compute_output_shape(self, input_shape):
        h, w = (None if s is None else s // p for s, p in zip(input_shape[1:3], self.patch_size))
        if self.flatten:
            return (input_shape[0], None if h is None or w is None else h * w, self.hidden_dim)
        return (input_shape[0], h, w, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            hidden_dim=self.hidden_dim,
            use_bias=self.use_bias,
            flatten=self.flatten,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
