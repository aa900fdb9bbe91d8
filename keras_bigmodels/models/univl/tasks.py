"""UniVL pretraining with its five objectives, and caption generation."""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.backend import compile_function
from keras_bigmodels.backend.decoding import own
from keras_bigmodels.generation import beam_search, decode
from keras_bigmodels.layers.feedforward import get_activation
from keras_bigmodels.layers.heads import MaskedLMHead
from keras_bigmodels.losses import frame_nce_loss, mil_nce_loss, sparse_cross_entropy_from_logits
from keras_bigmodels.models.generative import SubclassedGenerativeTask
from keras_bigmodels.models.inputs import LengthOf
from keras_bigmodels.models.univl.backbone import UniVLBackbone, mean_pool
from keras_bigmodels.utils import check_positive_int

# The paper's five objectives (section 3.3), by the name of their loss metric:
# joint: video-text joint (MIL-NCE on the two encoders' mean-pooled outputs),
# mlm: conditioned masked language model, frame: conditioned masked frame model (NCE over
# the batch's frames), alignment: video-text alignment (the cross encoder's first token,
# a softmax over the batch's videos for each text), caption: language reconstruction
# (the decoder, teacher forced).
OBJECTIVES = ("joint", "mlm", "frame", "alignment", "caption")
# The paper's staged pretraining: the joint loss first, then all five.
STAGES = {"joint": ("joint",), "all": OBJECTIVES}

_CLEAN = ("token_ids", "padding_mask", "frames", "frame_mask")
_MASKED = ("masked_token_ids", "padding_mask", "masked_frames", "frame_mask")
INPUTS_OF = {
    "joint": _CLEAN,
    "mlm": _MASKED + ("mask_positions", "mask_ids", "mask_weights"),
    "frame": _MASKED + ("frames", "frame_target_weights"),
    "alignment": _MASKED,
    "caption": _MASKED + ("decoder_token_ids", "decoder_padding_mask", "decoder_target_ids"),
}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class FramePredictionHead(keras.layers.Layer):
    """UniVL's masked-frame head: dense + activation + LayerNorm, then a linear map to the
    frame feature size (the prediction scored against real frames).

    Args:
        video_feature_dim: size of a frame's feature vector.
        activation, layer_norm_epsilon, kernel_initializer: of the transform.

    Example:
    >>> FramePredictionHead(16)(keras.ops.zeros((2, 4, 32))).shape
    (2, 4, 16)
    """

    def __init__(self, video_feature_dim, activation="gelu", layer_norm_epsilon=1e-12,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("video_feature_dim", video_feature_dim)
        self.video_feature_dim = video_feature_dim
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape):
        hidden = inputs_shape[-1]
        self._activation_fn = get_activation(self.activation)
        self.dense = keras.layers.Dense(hidden, kernel_initializer=self.kernel_initializer,
                                        dtype=self.dtype_policy, name="dense")
        self.dense.build(inputs_shape)
        self.norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon,
                                                    dtype=self.dtype_policy, name="norm")
        self.norm.build(inputs_shape)
        self.output_dense = keras.layers.Dense(self.video_feature_dim,
                                               kernel_initializer=self.kernel_initializer,
                                               dtype=self.dtype_policy, name="output")
        self.output_dense.build(inputs_shape)
        self.built = True

    def call(self, inputs):
        return self.output_dense(self.norm(self._activation_fn(self.dense(inputs))))

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.video_feature_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(video_feature_dim=self.video_feature_dim, activation=self.activation,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


def _weighted_mean(values, weights):
    weights = ops.cast(weights, "float32")
    total = ops.sum(weights)
    return ops.where(total > 0, ops.sum(values * weights) / ops.maximum(total, 1e-12), 0.0)


def _check_objectives(objectives):
    if isinstance(objectives, str):
        if objectives in STAGES:
            return STAGES[objectives]
        objectives = (objectives,)
    objectives = tuple(objectives)
    unknown = [name for name in objectives if name not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(
            f"`objectives` must be 'joint' (stage one), 'all' (stage two) or a non-empty "
            f"list of {list(OBJECTIVES)}; received {objectives!r}.")
    # In the paper's order, whatever the order given (the metrics then are too).
    return tuple(name for name in OBJECTIVES if name in objectives)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class UniVLPretrainer(SubclassedGenerativeTask):
    """UniVL pretraining: the sum of the enabled objectives' losses, each one a metric.

    `fit` takes the dict `objectives.univl.univl_batch` makes (no labels): calling the
    model returns {objective: loss} for the enabled objectives, and the train step sums
    them. The paper's staged pretraining is `objectives="joint"` first, then
    `set_objectives("all")`; its "enhanced video" is `univl_batch(...,
    whole_text_mask_rate=0.15)`. Retrieval reads `text_embeddings` / `video_embeddings`
    (the joint space) or `alignment_scores` (the cross encoder); `generate` writes
    captions from video (and optionally text) through the cached decode loop.

    Args:
        backbone: a `UniVLBackbone`.
        objectives: "all" (default), "joint", or a list of names from `OBJECTIVES`.
        alignment_negatives: videos each text is contrasted with in the alignment loss;
            None: every other video of the batch (the paper; the cross encoder then runs
            batch^2 pairs); an int k < batch: the next k videos of the batch (k + 1 pairs
            per text).
        tokenizer: optional `Tokenizer`; `generate` then returns strings.
        decoder_start_token_id, eos_token_id, pad_token_id: [CLS], [SEP] and [PAD] ids
            (2, 3, 0 as `Tokenizer.train_wordpiece` numbers them).

    Example:
    >>> task = UniVLPretrainer(backbone, objectives="joint")
    >>> task.fit(univl_batch(ids, mask, frames, None, ...), epochs=5)
    >>> task.set_objectives("all")
    >>> task.fit(univl_batch(ids, mask, frames, None, whole_text_mask_rate=0.15, ...))
    """

    backbone_cls = UniVLBackbone
    # A subclassed model: its inputs are the batch dict's keys (`INPUTS_OF`), no
    # symbolic inputs (the host-side checks name arrays by those keys).
    inputs = None

    def __init__(self, backbone, objectives="all", alignment_negatives=None, tokenizer=None,
                 decoder_start_token_id=2, eos_token_id=3, pad_token_id=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, UniVLBackbone):
            raise ValueError(f"`backbone` must be a UniVLBackbone; received "
                             f"{type(backbone).__name__}.")
        if alignment_negatives is not None:
            check_positive_int("alignment_negatives", alignment_negatives)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.alignment_negatives = alignment_negatives
        self._set_special_tokens(decoder_start_token_id, eos_token_id, pad_token_id)
        initializer = keras.initializers.TruncatedNormal(stddev=backbone.initializer_range)
        head_kwargs = dict(activation=backbone.activation,
                           layer_norm_epsilon=backbone.layer_norm_epsilon,
                           kernel_initializer=initializer, dtype=backbone.dtype_policy)
        self.mlm_head = MaskedLMHead(backbone.token_embedding, name="mlm_head", **head_kwargs)
        self.caption_head = MaskedLMHead(backbone.token_embedding, name="caption_head",
                                         **head_kwargs)
        self.frame_head = FramePredictionHead(backbone.video_feature_dim, name="frame_head",
                                              **head_kwargs)
        self.alignment_head = keras.layers.Dense(1, kernel_initializer=initializer,
                                                 dtype=backbone.dtype_policy,
                                                 name="alignment_head")
        # Not tracked as attributes: `metrics` lists those of the enabled objectives only.
        self.__dict__["_loss_trackers"] = {
            name: keras.metrics.Mean(name=f"{name}_loss") for name in OBJECTIVES}
        self.objectives = _check_objectives(objectives)
        self.build()
        self.compile()

    def build(self, input_shape=None):
        hidden = self.backbone.hidden_dim
        for head in (self.mlm_head, self.caption_head, self.frame_head):
            head.build((None, None, hidden))
        self.alignment_head.build((None, hidden))
        self.built = True

    def _set_special_tokens(self, start, eos, pad):
        vocabulary = self.backbone.vocabulary_size
        for name, value in (("decoder_start_token_id", start), ("eos_token_id", eos),
                            ("pad_token_id", pad)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
                    0 <= value < vocabulary):
                raise ValueError(f"`{name}` must be an id in [0, {vocabulary - 1}]; "
                                 f"received {value!r}.")
        self.decoder_start_token_id = int(start)
        self.eos_token_id = int(eos)
        self.pad_token_id = int(pad)

    # Objectives and stages ---------------------------------------------------------
    def set_objectives(self, objectives):
        """Train the given objectives from the next `fit` on ("joint", "all" or a list).

        The compiled train and test steps are dropped (they trace the enabled losses);
        the optimizer and its state stay.

        Example:
        >>> task.set_objectives("all")  # the paper's second stage
        """
        self.objectives = _check_objectives(objectives)
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    @property
    def metrics(self):
        trackers = self.__dict__.get("_loss_trackers", {})
        base = [m for m in super().metrics if all(m is not t for t in trackers.values())]
        return base + [trackers[name] for name in getattr(self, "objectives", ())]

    def compile(self, optimizer=None, learning_rate=1e-4, weight_decay=0.01, **kwargs):
        """AdamW (no decay of biases and LayerNorm), clipnorm 1.0, on the summed losses.

        Example:
        >>> task.compile(learning_rate=3e-4)
        """
        if optimizer is None:
            optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                               clipnorm=1.0)
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        if kwargs.pop("loss", None) is not None:
            raise ValueError("`loss` cannot be set: UniVLPretrainer trains the sum of its "
                             "objectives' losses; choose them with `objectives=` or "
                             "`set_objectives`.")
        super().compile(optimizer=optimizer, **kwargs)

    # The forward pass: one loss per enabled objective ---------------------------------
    def check_batch(self, inputs):
        """Raise a ValueError naming what the enabled objectives miss in `inputs`.

        Example:
        >>> task.check_batch({"token_ids": ids})
        Traceback (most recent call last):
        ValueError: UniVLPretrainer with objectives ('joint',) needs ...
        """
        if not isinstance(inputs, dict):
            raise ValueError(f"`inputs` must be a dict of arrays (from "
                             f"`objectives.univl.univl_batch`); received "
                             f"{type(inputs).__name__}.")
        needed = []
        for name in self.objectives:
            needed += [key for key in INPUTS_OF[name] if key not in needed]
        missing = [key for key in needed if key not in inputs]
        if missing:
            raise ValueError(f"{type(self).__name__} with objectives {self.objectives} needs "
                             f"inputs {needed}; missing {missing}. Make the batch with "
                             "`keras_bigmodels.objectives.univl.univl_batch`.")
        for key in ("frames", "masked_frames"):
            if key in needed:
                shape = tuple(inputs[key].shape)
                if len(shape) != 3 or shape[-1] != self.backbone.video_feature_dim:
                    raise ValueError(
                        f"`{key}` must be [batch, frames, {self.backbone.video_feature_dim}] "
                        f"(video_feature_dim); received shape {shape}.")

    def __call__(self, *args, **kwargs):
        self.check_batch(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None):
        backbone = self.backbone
        losses = {}
        if "joint" in self.objectives:
            similarity = self._joint_similarity(inputs["token_ids"], inputs["padding_mask"],
                                                inputs["frames"], inputs["frame_mask"],
                                                training)
            losses["joint"] = mil_nce_loss(similarity)
        if not any(name in self.objectives for name in OBJECTIVES[1:]):
            return losses
        padding_mask, frame_mask = inputs["padding_mask"], inputs["frame_mask"]
        text = backbone.encode_text(inputs["masked_token_ids"], padding_mask, training)
        video = backbone.encode_video(inputs["masked_frames"], frame_mask, training)
        if any(name in self.objectives for name in ("mlm", "frame", "caption")):
            cross, _, cross_mask = backbone.cross_encode(text, padding_mask, video, frame_mask,
                                                         training)
            length = ops.shape(text)[1]
            if "mlm" in self.objectives:
                logits = self.mlm_head(cross[:, :length], inputs["mask_positions"])
                losses["mlm"] = _weighted_mean(
                    sparse_cross_entropy_from_logits(inputs["mask_ids"], logits),
                    inputs["mask_weights"])
            if "frame" in self.objectives:
                predicted = self.frame_head(cross[:, length:])
                losses["frame"] = frame_nce_loss(predicted, inputs["frames"], frame_mask,
                                                 inputs["frame_target_weights"])
            if "caption" in self.objectives:
                hidden = backbone.decode(inputs["decoder_token_ids"],
                                         inputs["decoder_padding_mask"], cross, cross_mask,
                                         training)
                logits = self.caption_head(hidden)
                losses["caption"] = _weighted_mean(
                    sparse_cross_entropy_from_logits(inputs["decoder_target_ids"], logits),
                    inputs["decoder_padding_mask"])
        if "alignment" in self.objectives:
            logits, labels = self._alignment_logits(text, padding_mask, video, frame_mask,
                                                    training)
            losses["alignment"] = ops.mean(sparse_cross_entropy_from_logits(labels, logits))
        return losses

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros((), "float32")
        trackers = self.__dict__["_loss_trackers"]
        for name in self.objectives:
            value = ops.cast(y_pred[name], "float32")
            trackers[name].update_state(value)
            total = total + value
        for extra in self.losses:
            total = total + ops.cast(ops.sum(extra), "float32")
        return total

    def _joint_similarity(self, token_ids, padding_mask, frames, frame_mask, training=None):
        text = mean_pool(self.backbone.encode_text(token_ids, padding_mask, training),
                         padding_mask)
        video = mean_pool(self.backbone.encode_video(frames, frame_mask, training), frame_mask)
        # The paper's score: the dot product of the mean-pooled outputs.
        return ops.matmul(ops.cast(text, "float32"), ops.transpose(ops.cast(video, "float32")))

    def _pair_scores(self, text, padding_mask, video, frame_mask, training=None):
        """The alignment score of each (text row, video row) pair given row by row."""
        _, pooled, _ = self.backbone.cross_encode(text, padding_mask, video, frame_mask,
                                                  training)
        return ops.cast(self.alignment_head(pooled)[:, 0], "float32")

    def _alignment_logits(self, text, padding_mask, video, frame_mask, training=None):
        """([batch, candidates] scores, [batch] index of each text's own video)."""
        batch = ops.shape(text)[0]
        if self.alignment_negatives is None:
            # Row i * batch + j pairs text i with video j.
            scores = self._pair_scores(
                ops.repeat(text, batch, axis=0), ops.repeat(padding_mask, batch, axis=0),
                ops.tile(video, [batch, 1, 1]), ops.tile(frame_mask, [batch, 1]), training)
            return ops.reshape(scores, (batch, batch)), ops.arange(batch)
        count = self.alignment_negatives
        if isinstance(batch, int) and count >= batch:
            raise ValueError(f"`alignment_negatives` ({count}) must be below the batch size "
                             f"({batch}).")
        # Candidate s of text i is video i + s (s = 0: its own), every shift in one pass.
        shifted_video = ops.concatenate([ops.roll(video, -s, axis=0) for s in range(count + 1)],
                                        axis=0)
        shifted_mask = ops.concatenate(
            [ops.roll(frame_mask, -s, axis=0) for s in range(count + 1)], axis=0)
        scores = self._pair_scores(ops.tile(text, [count + 1, 1, 1]),
                                   ops.tile(padding_mask, [count + 1, 1]), shifted_video,
                                   shifted_mask, training)
        logits = ops.transpose(ops.reshape(scores, (count + 1, batch)))
        return logits, ops.zeros((batch,), "int32")

    # Retrieval ------------------------------------------------------------------------
    def text_embeddings(self, token_ids, padding_mask):
        """[batch, hidden] joint-space vectors of texts (mean-pooled text encoder).

        Example:
        >>> scores = task.text_embeddings(ids, mask) @ task.video_embeddings(frames, fmask).T
        """
        token_ids = ops.convert_to_tensor(np.asarray(token_ids), "int32")
        padding_mask = ops.convert_to_tensor(np.asarray(padding_mask).astype("int32"))
        sequence = self.backbone.encode_text(token_ids, padding_mask, training=False)
        return ops.convert_to_numpy(ops.cast(mean_pool(sequence, padding_mask), "float32"))

    def video_embeddings(self, frames, frame_mask=None):
        """[batch, hidden] joint-space vectors of videos (mean-pooled video encoder).

        Example:
        >>> vectors = task.video_embeddings(frames)
        """
        frames, frame_mask = self._video_arrays(frames, frame_mask)
        sequence = self.backbone.encode_video(frames, frame_mask, training=False)
        return ops.convert_to_numpy(ops.cast(mean_pool(sequence, frame_mask), "float32"))

    def alignment_scores(self, token_ids, padding_mask, frames, frame_mask=None):
        """[texts, videos] cross-encoder alignment scores of every text with every video.

        Example:
        >>> task.alignment_scores(ids, mask, frames).argmax(axis=1)  # best video per text
        """
        frames, frame_mask = self._video_arrays(frames, frame_mask)
        token_ids = ops.convert_to_tensor(np.asarray(token_ids), "int32")
        padding_mask = ops.convert_to_tensor(np.asarray(padding_mask).astype("int32"))
        text = self.backbone.encode_text(token_ids, padding_mask, training=False)
        video = self.backbone.encode_video(frames, frame_mask, training=False)
        texts, videos = text.shape[0], video.shape[0]
        scores = self._pair_scores(
            ops.repeat(text, videos, axis=0), ops.repeat(padding_mask, videos, axis=0),
            ops.tile(video, [texts, 1, 1]), ops.tile(frame_mask, [texts, 1]), training=False)
        return ops.convert_to_numpy(ops.reshape(scores, (texts, videos)))

    def _video_arrays(self, frames, frame_mask):
        frames = np.asarray(frames, "float32")
        if frames.ndim != 3 or frames.shape[-1] != self.backbone.video_feature_dim:
            raise ValueError(f"`frames` must be [batch, frames, "
                             f"{self.backbone.video_feature_dim}] (video_feature_dim); "
                             f"received shape {frames.shape}.")
        if frame_mask is None:
            frame_mask = np.ones(frames.shape[:2], "int32")
        frame_mask = np.asarray(frame_mask).astype("int32")
        if frame_mask.shape != frames.shape[:2]:
            raise ValueError(f"`frame_mask` must be [batch, frames] = {frames.shape[:2]}; "
                             f"received shape {frame_mask.shape}.")
        if frames.shape[1] > self.backbone.max_frames:
            raise ValueError(f"`frames` has {frames.shape[1]} frames, more than max_frames="
                             f"{self.backbone.max_frames}.")
        return ops.convert_to_tensor(frames), ops.convert_to_tensor(frame_mask)

    # Captioning (the decode protocol of keras_bigmodels.models.seq2seq_lm) -------------
    def logits_from_hidden(self, hidden):
        """float32 vocabulary logits of decoder states (the tied caption head)."""
        return ops.cast(self.caption_head(hidden), "float32")

    def _generate_function(self, sampler, num_beams, stop_token_ids, pad_token_id, shapes,
                           total_length, length_penalty, max_new_tokens):
        key = ("univl", sampler.key(), num_beams, stop_token_ids, pad_token_id, shapes,
               total_length, length_penalty, max_new_tokens)

        def build():
            def generate(token_ids, padding_mask, frames, frame_mask, buffer, prompt_mask,
                         uniform):
                self._count_trace()
                encoder_outputs, encoder_mask = self.backbone.encode(token_ids, padding_mask,
                                                                     frames, frame_mask)
                state = own((self.backbone.initial_cache(encoder_outputs, encoder_mask,
                                                         total_length), encoder_mask))

                def next_logits(ids, state, index):
                    cache, mask = state
                    hidden, cache = self.backbone.call_with_cache(ids, cache, index, mask)
                    return self.logits_from_hidden(hidden), (cache, mask)

                if num_beams > 1:
                    ids, _ = beam_search(next_logits, state, buffer, prompt_mask, 1, num_beams,
                                         stop_token_ids=stop_token_ids,
                                         length_penalty=length_penalty,
                                         max_new_tokens=max_new_tokens)
                    return ids
                return decode(next_logits, state, buffer, prompt_mask, 1, sampler,
                              stop_token_ids=stop_token_ids,
                              uniform=uniform if sampler.is_random else None,
                              pad_token_id=pad_token_id, max_new_tokens=max_new_tokens)

            return compile_function(generate, self.variables)

        return self._compiled_function(key, build)

    def generate(self, frames, frame_mask=None, token_ids=None, padding_mask=None,
                 max_new_tokens=16, sampler="greedy", temperature=1.0, top_k=50, top_p=0.9,
                 num_beams=4, length_penalty=1.0, stop_token_ids="auto", seed=None):
        """Write a caption for each video: the decoder starts from [CLS] and attends to the
        cross encoder's outputs over the text and the frames.

        Args:
            frames: float [batch, frames, video_feature_dim].
            frame_mask: [batch, frames] 1 on real frames (default: all).
            token_ids, padding_mask: the text beside the video (a transcript); default:
                the empty text `[CLS] [SEP]`, captioning from video alone.
            max_new_tokens, sampler, temperature, top_k, top_p, num_beams, length_penalty,
                stop_token_ids, seed: as in `Seq2SeqLM.generate` ("auto" stops at [SEP]).

        Returns:
            A list of id lists (start token excluded, cut at the stop token), or strings
            when the task has a tokenizer.

        Example:
        >>> task.generate(frames, max_new_tokens=8)
        """
        check_positive_int("max_new_tokens", max_new_tokens)
        frames, frame_mask = self._video_arrays(frames, frame_mask)
        batch = frames.shape[0]
        if token_ids is None:
            token_ids = np.tile([[self.decoder_start_token_id, self.eos_token_id]], (batch, 1))
            padding_mask = np.ones_like(token_ids)
        token_ids = np.asarray(token_ids).astype("int32")
        padding_mask = (np.asarray(token_ids) != self.pad_token_id if padding_mask is None
                        else np.asarray(padding_mask)).astype("int32")
        if token_ids.ndim != 2 or len(token_ids) != batch:
            raise ValueError(f"`token_ids` must be [batch, length] with one row per video "
                             f"({batch}); received shape {token_ids.shape}.")
        self._check_rows([list(row) for row in token_ids], name="token_ids")
        decoder_limit = self.backbone.decoder_max_sequence_length
        if 1 + max_new_tokens > decoder_limit:
            raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the decoder's "
                             f"{decoder_limit - 1} positions after the start token.")
        stop_token_ids = self._stop_tokens(stop_token_ids)
        step_sampler, beams, penalty = self._sampler(sampler, temperature, top_k, top_p,
                                                     num_beams, length_penalty)
        total_length = 1 + max_new_tokens
        fill = stop_token_ids[0] if stop_token_ids else self.pad_token_id
        buffer = np.full((batch, total_length), fill, dtype="int32")
        buffer[:, 0] = self.decoder_start_token_id
        prompt_mask = np.zeros((batch, total_length), dtype=bool)
        prompt_mask[:, 0] = True
        uniform = self._uniform(seed, batch, max_new_tokens)
        shapes = (tuple(token_ids.shape), tuple(frames.shape))
        function = self._generate_function(step_sampler, beams, stop_token_ids, fill, shapes,
                                           total_length, penalty, max_new_tokens)
        output = function(ops.convert_to_tensor(token_ids), ops.convert_to_tensor(padding_mask),
                          frames, frame_mask, ops.convert_to_tensor(buffer),
                          ops.convert_to_tensor(prompt_mask), ops.convert_to_tensor(uniform))
        kind = "strings" if self.tokenizer is not None else "lists"
        return self._format_outputs(ops.convert_to_numpy(output), [1] * batch, max_new_tokens,
                                    stop_token_ids, kind, keep_prompt=False)

    # Checked data and config ------------------------------------------------------------
    def input_ranges(self):
        vocabulary = (0, self.backbone.vocabulary_size)
        ranges = {name: vocabulary for name in ("token_ids", "masked_token_ids", "mask_ids",
                                                "decoder_token_ids", "decoder_target_ids")}
        ranges.update({name: (0, 2) for name in ("padding_mask", "frame_mask",
                                                 "decoder_padding_mask")})
        ranges["mask_positions"] = (0, LengthOf("token_ids"))
        return ranges

    def get_config(self):
        config = super().get_config()
        config.update(objectives=list(self.objectives),
                      alignment_negatives=self.alignment_negatives,
                      decoder_start_token_id=self.decoder_start_token_id,
                      eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
        return config
