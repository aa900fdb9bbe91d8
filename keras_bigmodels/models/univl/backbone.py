"""UniVL (Luo et al. 2020): text and video encoders, a cross encoder and a caption decoder."""

import keras
from keras import ops

from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.layers.feedforward import ACTIVATIONS
from keras_bigmodels.layers.positions import PositionEmbedding
from keras_bigmodels.layers.transformer import (TransformerDecoderBlock,
                                                TransformerEncoderBlock, make_norm)
from keras_bigmodels.models.base import Backbone
# A composite: UniVL's text encoder is BERT.
from keras_bigmodels.models.bert.backbone import BertBackbone
from keras_bigmodels.utils import (check_in, check_positive_int, check_token_ids,
                                   check_transformer_dims)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SequenceEmbedding(keras.layers.Layer):
    """Learned positions (and, optionally, a type embedding) added to a sequence of
    vectors, then LayerNorm and dropout: BERT's embedding sum for inputs that are already
    vectors (projected frames, the concatenated text and video streams, decoder tokens).

    Args:
        max_sequence_length: learned positions.
        num_types: rows of the type table (0: none); the cross encoder marks text 0 and
            video 1.
        layer_norm_epsilon, dropout, initializer: as the backbone's.
        input_name: the input named in the too-long error.

    Call args:
        vectors: [batch, length, hidden].
        type_ids: [batch, length] or [length] ints when `num_types` > 0.
        start_index: position of the first vector (incremental decoding).
        position_ids: [batch, length] positions of the vectors, instead of `start_index`
            onwards.

    Example:
    >>> SequenceEmbedding(16)(keras.ops.zeros((2, 5, 8))).shape
    (2, 5, 8)
    """

    def __init__(self, max_sequence_length, num_types=0, layer_norm_epsilon=1e-12, dropout=0.0,
                 initializer="glorot_uniform", input_name="inputs", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_sequence_length", max_sequence_length)
        if isinstance(num_types, bool) or not isinstance(num_types, int) or num_types < 0:
            raise ValueError(f"`num_types` must be an int >= 0; received {num_types!r}.")
        self.max_sequence_length = max_sequence_length
        self.num_types = num_types
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.initializer = keras.initializers.get(initializer)
        self.input_name = input_name

    def build(self, vectors_shape, type_ids_shape=None):
        self.position_embedding = PositionEmbedding(
            self.max_sequence_length, initializer=self.initializer, dtype=self.dtype_policy,
            name="position_embedding")
        self.position_embedding.build(vectors_shape)
        if self.num_types:
            self.type_embedding = keras.layers.Embedding(
                self.num_types, vectors_shape[-1], embeddings_initializer=self.initializer,
                dtype=self.dtype_policy, name="type_embedding")
            self.type_embedding.build((None,))
        self.norm = make_norm("layer_norm", self.layer_norm_epsilon, "norm", self.dtype_policy)
        self.norm.build(vectors_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, vectors, type_ids=None, start_index=0, position_ids=None, training=None):
        length = vectors.shape[1]
        if position_ids is not None:
            positions = ops.take(self.position_embedding.embeddings, position_ids, axis=0)
        else:
            if isinstance(start_index, int) and length is not None and (
                    length + start_index > self.max_sequence_length):
                raise ValueError(
                    f"`{self.input_name}` reaches position {length + start_index}, beyond the "
                    f"{self.max_sequence_length} learned positions; truncate it or build the "
                    "model with more positions.")
            positions = invoke(self.position_embedding, vectors, start_index=start_index)
        x = vectors + ops.cast(positions, vectors.dtype)
        if self.num_types and type_ids is not None:
            x = x + invoke(self.type_embedding, type_ids)
        x = invoke(self.norm, x)
        return invoke(self.dropout_layer, x, training=training)

    def compute_output_spec(self, vectors, type_ids=None, start_index=0, position_ids=None,
                            training=None):
        return keras.KerasTensor(vectors.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(max_sequence_length=self.max_sequence_length, num_types=self.num_types,
                      layer_norm_epsilon=self.layer_norm_epsilon, dropout=self.dropout,
                      initializer=keras.initializers.serialize(self.initializer),
                      input_name=self.input_name)
        return config


def mean_pool(sequence, mask):
    """The mean of `sequence` [batch, length, hidden] over its real positions (`mask`)."""
    weights = ops.cast(mask, sequence.dtype)[:, :, None]
    return ops.sum(sequence * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


def _check_mask(mask, shape, name, of):
    """Raise a ValueError naming `name` unless it is [batch, length] as `of` is."""
    mask_shape = tuple(getattr(mask, "shape", ()))
    if mask is None or not mask_shape or len(shape) < 2:
        return
    if len(mask_shape) != 2 or any(a is not None and b is not None and a != b
                                   for a, b in zip(mask_shape, shape[:2])):
        raise ValueError(f"`{name}` must be [batch, length] = {tuple(shape[:2])}, one entry per "
                         f"position of `{of}`; received shape {mask_shape}.")


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class UniVLBackbone(Backbone):
    """UniVL (Luo et al. 2020): a unified video and language model of four Transformers.

    - text encoder: BERT (`text_encoder`, a `BertBackbone`) over `[CLS] text [SEP]`;
    - video encoder: per-frame features projected to the hidden size (a linear layer),
      plus learned positions, LayerNorm, then post-norm Transformer blocks;
    - cross encoder: Transformer blocks over the text and video outputs concatenated, with
      a type embedding (text 0, video 1) and learned positions (text from 0, frames from
      `max_sequence_length`); its first token's tanh pooler feeds the alignment head;
    - decoder: causal Transformer blocks with cross-attention to the cross encoder's
      outputs; its token vectors are BERT's table (tied, as in UniVL), its positions
      its own.

    The paper's sizes: 768 hidden, 12 heads, 12 text, 6 video, 2 cross and 3 decoder layers,
    S3D features of 1024 per frame: `UniVLBackbone.from_preset("univl-base")` (its tables
    sized as the reference code's, see `keras_bigmodels.models.univl.config`).

    Args:
        vocabulary_size: token ids of the text (and caption) vocabulary.
        video_feature_dim: size of each frame's feature vector.
        num_text_layers, num_video_layers, num_cross_layers, num_decoder_layers: blocks
            of each Transformer.
        num_heads, hidden_dim, intermediate_dim: shared by the four.
        max_sequence_length: text (and caption) positions.
        max_frames: frame positions of the video encoder.
        activation: feed-forward activation ("gelu").
        dropout: embedding and residual dropout; attention_dropout defaults to it.
        layer_norm_epsilon: of every LayerNorm (BERT's 1e-12).
        initializer_range: std of the truncated-normal initializer (0.02).
        dtype: dtype policy.

    Inputs: dict of `token_ids`, `padding_mask` [batch, length] ints, `frames` float
    [batch, frames, video_feature_dim], `frame_mask` [batch, frames] (1 on real frames),
    `decoder_token_ids`, `decoder_padding_mask` [batch, target].
    Outputs: dict of `text_sequence_output`, `video_sequence_output`,
    `cross_sequence_output` ([batch, length + frames, hidden]), `cross_pooled_output`
    and `decoder_sequence_output`.

    Example:
    >>> backbone = UniVLBackbone(vocabulary_size=100, video_feature_dim=16, hidden_dim=32,
    ...                          num_heads=2, intermediate_dim=64, num_text_layers=2,
    ...                          num_video_layers=1, num_cross_layers=1, num_decoder_layers=1)
    >>> ids = np.array([[2, 7, 3]])
    >>> out = backbone({"token_ids": ids, "padding_mask": ids > 0,
    ...                 "frames": np.zeros((1, 4, 16)), "frame_mask": np.ones((1, 4)),
    ...                 "decoder_token_ids": ids, "decoder_padding_mask": ids > 0})
    >>> out["cross_sequence_output"].shape
    (1, 7, 32)
    """

    family = "univl"
    config_keys = (
        "vocabulary_size", "video_feature_dim", "num_text_layers", "num_video_layers",
        "num_cross_layers", "num_decoder_layers", "num_heads", "hidden_dim",
        "intermediate_dim", "max_sequence_length", "max_frames", "activation", "dropout",
        "attention_dropout", "layer_norm_epsilon", "initializer_range",
    )
    input_names = ("token_ids", "padding_mask", "frames", "frame_mask", "decoder_token_ids",
                   "decoder_padding_mask")

    def __init__(self, vocabulary_size, video_feature_dim, num_text_layers=12,
                 num_video_layers=6, num_cross_layers=2, num_decoder_layers=3, num_heads=12,
                 hidden_dim=768, intermediate_dim=3072, max_sequence_length=48, max_frames=48,
                 activation="gelu", dropout=0.1, attention_dropout=None,
                 layer_norm_epsilon=1e-12, initializer_range=0.02, dtype=None, **kwargs):
        check_transformer_dims(
            vocabulary_size=vocabulary_size, video_feature_dim=video_feature_dim,
            num_text_layers=num_text_layers, num_video_layers=num_video_layers,
            num_cross_layers=num_cross_layers, num_decoder_layers=num_decoder_layers,
            num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length, max_frames=max_frames)
        check_in("activation", activation, ACTIVATIONS)
        initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        block_kwargs = dict(num_heads=num_heads, intermediate_dim=intermediate_dim,
                            activation=activation, dropout=dropout,
                            attention_dropout=attention_dropout, normalize_first=False,
                            layer_norm_epsilon=layer_norm_epsilon,
                            kernel_initializer=initializer, dtype=dtype)
        embedding_kwargs = dict(layer_norm_epsilon=layer_norm_epsilon, dropout=dropout,
                                initializer=initializer, dtype=dtype)

        text_encoder = BertBackbone(
            vocabulary_size=vocabulary_size, num_layers=num_text_layers, num_heads=num_heads,
            hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length, activation=activation, dropout=dropout,
            attention_dropout=attention_dropout, layer_norm_epsilon=layer_norm_epsilon,
            initializer_range=initializer_range, dtype=dtype, name="text_encoder")
        frame_projection = keras.layers.Dense(hidden_dim, kernel_initializer=initializer,
                                              dtype=dtype, name="frame_projection")
        video_embedding = SequenceEmbedding(max_frames, input_name="frames",
                                            name="video_embedding", **embedding_kwargs)
        video_layers = [TransformerEncoderBlock(name=f"video_layer_{i}", **block_kwargs)
                        for i in range(num_video_layers)]
        cross_embedding = SequenceEmbedding(max_sequence_length + max_frames, num_types=2,
                                            input_name="text and frames",
                                            name="cross_embedding", **embedding_kwargs)
        cross_layers = [TransformerEncoderBlock(name=f"cross_layer_{i}", **block_kwargs)
                        for i in range(num_cross_layers)]
        cross_pooler = keras.layers.Dense(hidden_dim, activation="tanh",
                                          kernel_initializer=initializer, dtype=dtype,
                                          name="cross_pooler")
        decoder_embedding = SequenceEmbedding(max_sequence_length,
                                              input_name="decoder_token_ids",
                                              name="decoder_embedding", **embedding_kwargs)
        decoder_layers = [TransformerDecoderBlock(name=f"decoder_layer_{i}", **block_kwargs)
                          for i in range(num_decoder_layers)]

        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
            "frames": keras.Input(shape=(None, video_feature_dim), name="frames"),
            "frame_mask": keras.Input(shape=(None,), dtype="int32", name="frame_mask"),
            "decoder_token_ids": keras.Input(shape=(None,), dtype="int32",
                                             name="decoder_token_ids"),
            "decoder_padding_mask": keras.Input(shape=(None,), dtype="int32",
                                                name="decoder_padding_mask"),
        }
        # The methods below build the graph before Model.__init__, when no layer may be an
        # attribute yet (torch), so they read the layers from this plain dict until then.
        self.__dict__["_parts"] = dict(
            text_encoder=text_encoder, frame_projection=frame_projection,
            video_embedding=video_embedding, video_layers=video_layers,
            cross_embedding=cross_embedding, cross_layers=cross_layers,
            cross_pooler=cross_pooler, decoder_embedding=decoder_embedding,
            decoder_layers=decoder_layers)
        text = self._encode_text(inputs["token_ids"], inputs["padding_mask"])
        video = self._encode_video(inputs["frames"], inputs["frame_mask"])
        cross, pooled, cross_mask = self._cross_encode(text, inputs["padding_mask"], video,
                                                       inputs["frame_mask"])
        decoded = self._decode(inputs["decoder_token_ids"], inputs["decoder_padding_mask"],
                               cross, cross_mask)
        outputs = {"text_sequence_output": text, "video_sequence_output": video,
                   "cross_sequence_output": cross, "cross_pooled_output": pooled,
                   "decoder_sequence_output": decoded}
        parts = self.__dict__.pop("_parts")
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        # torch modules refuse attributes before Model.__init__, so layers are set after.
        for name, part in parts.items():
            setattr(self, name, part)

        self.vocabulary_size = vocabulary_size
        self.video_feature_dim = video_feature_dim
        self.num_text_layers = num_text_layers
        self.num_video_layers = num_video_layers
        self.num_cross_layers = num_cross_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        # Decoder positions: as many as the text's.
        self.decoder_max_sequence_length = max_sequence_length
        self.max_frames = max_frames
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range

    # The four Transformers, callable on their own ------------------------------------
    def _part(self, name):
        parts = self.__dict__.get("_parts")
        return parts[name] if parts is not None else getattr(self, name)

    @property
    def token_embedding(self):
        """BERT's token table: the decoder's input vectors and the tied output layers."""
        return self._part("text_encoder").token_embedding

    def _encode_text(self, token_ids, padding_mask, training=None):
        # Cast: a numpy id array beside tensors is a mixed nest Keras refuses.
        token_ids = ops.cast(token_ids, "int32")
        padding_mask = ops.cast(padding_mask, "int32")
        out = self._part("text_encoder")(
            {"token_ids": token_ids, "segment_ids": ops.zeros_like(token_ids),
             "padding_mask": padding_mask}, training=training)
        return out["sequence_output"]

    def _encode_video(self, frames, frame_mask, training=None):
        x = invoke(self._part("frame_projection"), frames)
        x = invoke(self._part("video_embedding"), x, training=training)
        for block in self._part("video_layers"):
            x = invoke(block, x, padding_mask=frame_mask, training=training)
        return x

    def _cross_encode(self, text, padding_mask, video, frame_mask, training=None):
        x = ops.concatenate([text, video], axis=1)
        mask = ops.concatenate([ops.cast(padding_mask, "int32"), ops.cast(frame_mask, "int32")],
                               axis=1)
        type_ids = ops.concatenate([ops.zeros_like(ops.cast(padding_mask, "int32")),
                                    ops.ones_like(ops.cast(frame_mask, "int32"))], axis=1)
        # Frame positions start after the longest text, not after this text's padding: a
        # video reads the same positions beside any text (the empty text of captioning
        # included).
        max_length = self._part("cross_embedding").max_sequence_length - self._max_frames()
        # (From the mask, not a slice of type_ids by text's static length: that length is
        # None while the functional graph is built, and the slice would take every column.)
        text_positions = ops.cumsum(ops.ones_like(ops.cast(padding_mask, "int32")), axis=1)
        frame_positions = ops.cumsum(ops.ones_like(ops.cast(frame_mask, "int32")), axis=1)
        position_ids = ops.concatenate([text_positions - 1, max_length + frame_positions - 1],
                                       axis=1)
        x = invoke(self._part("cross_embedding"), x, type_ids=type_ids,
                   position_ids=position_ids, training=training)
        for block in self._part("cross_layers"):
            x = invoke(block, x, padding_mask=mask, training=training)
        pooled = invoke(self._part("cross_pooler"), x[:, 0, :])
        return x, pooled, mask

    def _max_frames(self):
        return self._part("video_embedding").max_sequence_length

    def _decode(self, decoder_token_ids, decoder_padding_mask, cross, cross_mask,
                training=None):
        y = invoke(self.token_embedding, decoder_token_ids)
        y = invoke(self._part("decoder_embedding"), y, training=training)
        for block in self._part("decoder_layers"):
            y = invoke(block, y, cross, padding_mask=decoder_padding_mask,
                       encoder_padding_mask=cross_mask, training=training)
        return y

    def encode_text(self, token_ids, padding_mask, training=None):
        """The text encoder (BERT): [batch, length] ids and mask -> [batch, length, hidden].

        Example:
        >>> backbone.encode_text(ids, ids > 0).shape
        """
        self._check_ids(token_ids, padding_mask, "token_ids", "padding_mask")
        return self._encode_text(token_ids, padding_mask, training)

    def encode_video(self, frames, frame_mask, training=None):
        """The video encoder: [batch, frames, video_feature_dim] features and their mask ->
        [batch, frames, hidden].

        Example:
        >>> backbone.encode_video(np.zeros((1, 4, 16)), np.ones((1, 4))).shape
        """
        self._check_frames(frames, frame_mask)
        return self._encode_video(frames, frame_mask, training)

    def cross_encode(self, text, padding_mask, video, frame_mask, training=None):
        """The cross encoder over both encoders' outputs: (sequence [batch, length +
        frames, hidden], pooled first token [batch, hidden], the joint mask).

        Example:
        >>> sequence, pooled, mask = backbone.cross_encode(text, ids > 0, video, frame_mask)
        """
        return self._cross_encode(text, padding_mask, video, frame_mask, training)

    def decode(self, decoder_token_ids, decoder_padding_mask, cross, cross_mask,
               training=None):
        """The caption decoder, teacher forced: [batch, target, hidden] states.

        Example:
        >>> hidden = backbone.decode(caption_ids, caption_ids > 0, sequence, mask)
        """
        return self._decode(decoder_token_ids, decoder_padding_mask, cross, cross_mask,
                            training)

    # Decoding protocol (see keras_bigmodels.models.seq2seq_lm) ---------------------------
    def encode(self, token_ids, padding_mask, frames, frame_mask):
        """(cross encoder outputs, their mask): what the decoder attends to."""
        text = self._encode_text(token_ids, padding_mask)
        video = self._encode_video(frames, frame_mask)
        sequence, _, mask = self._cross_encode(text, padding_mask, video, frame_mask)
        return sequence, mask

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def initial_cache(self, encoder_outputs, encoder_padding_mask, max_length):
        """Zero self-attention caches and the cross-attention keys/values, per layer."""
        if max_length > self.decoder_max_sequence_length:
            raise ValueError(
                f"Decoding to length {max_length} goes beyond the decoder's "
                f"{self.decoder_max_sequence_length} positions; lower `max_new_tokens`.")
        batch = ops.shape(encoder_outputs)[0]
        shape = (batch, 2, self.num_heads, max_length, self.head_dim)
        return {
            "self": [ops.zeros(shape, self.compute_dtype) for _ in self.decoder_layers],
            "cross": [block.cross_attention_cache(encoder_outputs)
                      for block in self.decoder_layers],
        }

    def call_with_cache(self, decoder_token_ids, cache, cache_update_index,
                        encoder_padding_mask):
        """Decoder states of ids written at `cache_update_index`, and the updated cache."""
        y = invoke(self.token_embedding, decoder_token_ids)
        y = invoke(self.decoder_embedding, y, start_index=cache_update_index)
        new_self = []
        for block, self_cache, cross_cache in zip(self.decoder_layers, cache["self"],
                                                  cache["cross"]):
            y, self_cache = invoke(
                block, y, encoder_padding_mask=encoder_padding_mask, cache=self_cache,
                cache_update_index=cache_update_index, cross_attention_cache=cross_cache)
            new_self.append(self_cache)
        return y, {"self": new_self, "cross": cache["cross"]}

    @classmethod
    def from_text_encoder(cls, text_encoder, video_feature_dim, **kwargs):
        """A UniVL whose text encoder starts from a (pretrained) `BertBackbone`'s weights.

        The sizes shared by the four Transformers are the BERT's; `kwargs` set the rest
        (layers of the other three, `max_frames`, ...).

        Example:
        >>> bert = BertBackbone.from_preset("bert-tiny")
        >>> univl = UniVLBackbone.from_text_encoder(bert, video_feature_dim=1024)
        """
        if not isinstance(text_encoder, BertBackbone):
            raise ValueError("`text_encoder` must be a BertBackbone; received "
                             f"{type(text_encoder).__name__}.")
        if text_encoder.embedding_dim or text_encoder.share_layers or text_encoder.position_offset:
            raise ValueError("`text_encoder` must be a plain BERT (no ALBERT factorization or "
                             "sharing, no RoBERTa positions).")
        config = dict(vocabulary_size=text_encoder.vocabulary_size,
                      num_text_layers=text_encoder.num_layers, num_heads=text_encoder.num_heads,
                      hidden_dim=text_encoder.hidden_dim,
                      intermediate_dim=text_encoder.intermediate_dim,
                      max_sequence_length=text_encoder.max_sequence_length,
                      activation=text_encoder.activation,
                      layer_norm_epsilon=text_encoder.layer_norm_epsilon,
                      initializer_range=text_encoder.initializer_range)
        config.update(kwargs)
        model = cls(video_feature_dim=video_feature_dim, **config)
        # BERT's segment table has two rows; UniVL reads only row 0 but keeps the shape.
        model.text_encoder.set_weights(text_encoder.get_weights())
        return model

    def check_inputs(self, inputs):
        """Raise a ValueError naming what is missing from or wrong in `inputs`."""
        if not isinstance(inputs, dict):
            return
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"{type(self).__name__} needs a dict of {list(self.input_names)}; "
                             f"missing {missing}. Received keys {sorted(inputs)}.")
        self._check_frames(inputs["frames"], inputs["frame_mask"])
        self._check_ids(inputs["token_ids"], inputs["padding_mask"], "token_ids",
                        "padding_mask")
        self._check_ids(inputs["decoder_token_ids"], inputs["decoder_padding_mask"],
                        "decoder_token_ids", "decoder_padding_mask")

    def _check_frames(self, frames, frame_mask):
        shape = tuple(getattr(frames, "shape", ()))
        if len(shape) != 3 or shape[-1] != self.video_feature_dim:
            raise ValueError(f"`frames` must be [batch, frames, {self.video_feature_dim}] "
                             f"(video_feature_dim={self.video_feature_dim}); received shape "
                             f"{shape}.")
        _check_mask(frame_mask, shape[:2], "frame_mask", "frames")

    def _check_ids(self, token_ids, mask, name, mask_name):
        # The embedding's own check names `token_ids` whichever input it reads.
        check_token_ids(token_ids, self.vocabulary_size, name=name)
        _check_mask(mask, tuple(getattr(token_ids, "shape", ())), mask_name, name)

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message does not say what to pass.
        self.check_inputs(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)
