"""What users fit on VideoBERT: masked prediction of words and visual words + alignment."""

import keras
import numpy as np

from keras_bigmodels.layers.heads import MaskedLMHead
from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.inputs import LengthOf
from keras_bigmodels.models.videobert.backbone import VideoBERTBackbone
from keras_bigmodels.objectives.video_text import mask_video_text, pack_video_text

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")


def _adamw(learning_rate):
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.01)
    # As BERT: no decay on LayerNorm scales and biases.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class VideoBERTPretrainer(Task):
    """VideoBERT pretraining: masked words and visual words, and linguistic-visual alignment.

    One masked-token head (tied to the joint token table) predicts masked word pieces and
    masked visual words alike; a dense head on the pooled [CLS] output classifies whether
    the video belongs to the text (Sun et al. 2019, section 3.2). Train it on the mix of
    joint, text-only and video-only examples of `objectives.video_text`, with
    `VideoBERTPretrainingDataset` (the alignment loss weighs only joint examples).

    Args:
        backbone: a `VideoBERTBackbone`.
        freeze_backbone: train only the heads.

    Inputs: dict of `token_ids`, `segment_ids`, `padding_mask`, `mask_positions`.
    Outputs: dict `mlm` [batch, predictions, text + visual vocabulary] and `alignment`
        [batch, 2] (index 1: the video matches the text).

    Example:
    >>> backbone = VideoBERTBackbone(text_vocabulary_size=64, visual_vocabulary_size=144,
    ...                              num_layers=2, num_heads=2, hidden_dim=32,
    ...                              intermediate_dim=64)
    >>> pretrainer = VideoBERTPretrainer(backbone)
    >>> pretrainer.fit(VideoBERTPretrainingDataset(examples, batch_size=32, ...), epochs=3)
    """

    backbone_cls = VideoBERTBackbone

    def __init__(self, backbone, freeze_backbone=False, **kwargs):
        if not isinstance(backbone, VideoBERTBackbone):
            raise ValueError(f"`backbone` must be a VideoBERTBackbone; received "
                             f"{type(backbone).__name__}.")
        initializer = keras.initializers.TruncatedNormal(stddev=backbone.initializer_range)
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
                  for name in INPUT_NAMES + ("mask_positions",)}
        features = backbone({name: inputs[name] for name in INPUT_NAMES})
        mlm_head = MaskedLMHead(backbone.token_embedding, activation=backbone.activation,
                                layer_norm_epsilon=backbone.layer_norm_epsilon,
                                kernel_initializer=initializer, dtype=backbone.dtype_policy,
                                name="mlm_head")
        alignment_head = keras.layers.Dense(2, kernel_initializer=initializer,
                                            dtype=backbone.dtype_policy, name="alignment_head")
        outputs = {"mlm": mlm_head(features["sequence_output"], inputs["mask_positions"]),
                   "alignment": alignment_head(features["pooled_output"])}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.trainable = False
        self.mlm_head = mlm_head
        self.alignment_head = alignment_head
        self.compile()

    def compile(self, optimizer=None, loss=None, metrics=None, weighted_metrics=None,
                learning_rate=1e-4, alignment_weight=5.0, loss_weights=None, **kwargs):
        """AdamW on L_masked + alignment_weight * L_alignment; both accuracies reported.

        Pass `mask_weights` as the `mlm` sample weight (only real predictions count) and
        `alignment_weights` as the `alignment` one (only joint examples count), as
        `VideoBERTPretrainingDataset` does.

        Args:
            optimizer, loss, metrics, weighted_metrics: as in `keras.Model.compile`
                (defaults: AdamW, the two cross entropies, the two accuracies).
            learning_rate: of the default AdamW.
            alignment_weight: weight of the alignment loss. The paper sums the two; with
                equal weights the masked-token loss, several times larger, sets the pace
                and the [CLS] head sits at the majority label for tens of epochs (the
                tiny test model: about 25 epochs at 1.0, 15 at 5.0, measured on jax).
            loss_weights: a dict `{"mlm": ..., "alignment": ...}` instead.

        Example:
        >>> pretrainer.compile(learning_rate=1e-3, alignment_weight=5.0)
        """
        if not isinstance(alignment_weight, (int, float)) or alignment_weight < 0:
            raise ValueError(f"`alignment_weight` must be a number >= 0; received "
                             f"{alignment_weight!r}.")
        if loss_weights is None:
            loss_weights = {"mlm": 1.0, "alignment": float(alignment_weight)}
        if loss is None:
            # Both means are over the weighted entries only: the masked positions, and the
            # joint examples (text-only and video-only ones weigh 0 for alignment, and
            # must not dilute its gradient).
            loss = {"mlm": SparseCrossEntropy(reduction="mean_with_sample_weight"),
                    "alignment": SparseCrossEntropy(reduction="mean_with_sample_weight")}
        if weighted_metrics is None:
            weighted_metrics = {
                "mlm": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
                "alignment": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
            }
        super().compile(optimizer=optimizer or _adamw(learning_rate), loss=loss,
                        metrics=metrics, weighted_metrics=weighted_metrics,
                        loss_weights=loss_weights, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(freeze_backbone=self.freeze_backbone)
        return config

    def input_ranges(self):
        return {"token_ids": (0, self.backbone.vocabulary_size),
                "segment_ids": (0, max(self.backbone.num_segments, 1)),
                "padding_mask": (0, 2),
                "mask_positions": (0, LengthOf("token_ids"))}

    def label_range(self):
        return {"mlm": (0, self.backbone.vocabulary_size), "alignment": (0, 2)}

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message does not say what to pass.
        inputs = args[0] if args else kwargs.get("inputs")
        self.backbone.check_inputs(inputs)
        if isinstance(inputs, dict) and "mask_positions" not in inputs:
            raise ValueError(
                "VideoBERTPretrainer needs `mask_positions` ([batch, predictions] positions "
                f"to predict) beside {list(INPUT_NAMES)}; received keys {sorted(inputs)}."
            )
        return super().__call__(*args, **kwargs)

    # Inference helpers ----------------------------------------------------------------
    def masked_logits(self, inputs, batch_size=64):
        """Numpy logits [batch, predictions, vocabulary] at `inputs["mask_positions"]`."""
        outputs = self.predict({k: inputs[k] for k in INPUT_NAMES + ("mask_positions",)},
                               batch_size=batch_size, verbose=0)
        return np.asarray(outputs["mlm"])

    def alignment_probabilities(self, inputs, batch_size=64):
        """Numpy probability [batch] that the video matches the text (the [CLS] head)."""
        inputs = dict(inputs)
        inputs.setdefault("mask_positions", np.zeros((len(inputs["token_ids"]), 1), np.int32))
        logits = np.asarray(self.predict({k: inputs[k] for k in INPUT_NAMES + ("mask_positions",)},
                                         batch_size=batch_size, verbose=0)["alignment"], np.float64)
        logits -= logits.max(-1, keepdims=True)
        probabilities = np.exp(logits)
        return (probabilities[:, 1] / probabilities.sum(-1)).astype(np.float32)


def zero_shot_classify(pretrainer, template_ids, candidate_ids, visual_ids=None, *,
                       mask_token_id, cls_token_id, sep_token_id, bridge_token_id,
                       max_text_length, max_visual_length, pad_token_id=0, visual_mask=None,
                       num_examples=None, batch_size=64):
    """Fill the [MASK]s of a text template given each video; pick among candidate words.

    VideoBERT's zero-shot classification (section 4.3): the video is shown with a
    template such as "a [MASK] moving [MASK]" and each [MASK] is read off the masked-token
    head, restricted to the class words.

    Args:
        pretrainer: a trained `VideoBERTPretrainer`.
        template_ids: text ids of the template, with `mask_token_id` at each blank.
        candidate_ids: per blank, the token ids of its class words (a list of lists; a
            single list when the template has one blank).
        visual_ids: visual word ids per video ([n, frames] or a list); None scores the
            template alone (text-only): the video-blind prior, a baseline.
        mask_token_id, cls_token_id, sep_token_id, bridge_token_id, max_text_length,
            max_visual_length, pad_token_id, visual_mask: as in
            `objectives.video_text.pack_video_text`.
        num_examples: rows to return when `visual_ids` is None (the prior repeated).
        batch_size: of the forward passes.

    Returns:
        (predictions int32 [n, blanks] indices into each blank's candidates,
         log-probabilities float32 [n, blanks, max candidates], -inf where a blank has
         fewer candidates).

    Example:
    >>> template = tokenizer.encode("a [MASK] moving [MASK]")
    >>> digit_words = [tokenizer.token_to_id(w) for w in DIGIT_NAMES]
    >>> direction_words = [tokenizer.token_to_id(w) for w in ("left", "right", "up", "down")]
    >>> predictions, _ = zero_shot_classify(pretrainer, template, [digit_words, direction_words],
    ...                                     visual_ids, mask_token_id=4, cls_token_id=2,
    ...                                     sep_token_id=3, bridge_token_id=5,
    ...                                     max_text_length=8, max_visual_length=8)
    """
    template_ids = [int(t) for t in template_ids]
    blanks = [i for i, t in enumerate(template_ids) if t == mask_token_id]
    if not blanks:
        raise ValueError(f"`template_ids` must contain `mask_token_id` ({mask_token_id}) at "
                         "each blank.")
    if len(template_ids) > max_text_length:
        raise ValueError(f"`template_ids` ({len(template_ids)} ids) is longer than "
                         "`max_text_length` "
                         f"({max_text_length}).")
    if candidate_ids and np.ndim(candidate_ids[0]) == 0:
        candidate_ids = [candidate_ids]
    candidate_ids = [[int(c) for c in group] for group in candidate_ids]
    if len(candidate_ids) != len(blanks) or any(not group for group in candidate_ids):
        raise ValueError(
            f"`candidate_ids` must hold one non-empty list of ids per blank ({len(blanks)}); "
            f"received {len(candidate_ids)} lists."
        )
    vocabulary_size = pretrainer.backbone.vocabulary_size
    if any(not 0 <= c < vocabulary_size for group in candidate_ids for c in group):
        raise ValueError(f"`candidate_ids` must lie in [0, {vocabulary_size}).")
    if visual_ids is None:
        count = 1
        texts = [template_ids]
    else:
        count = len(visual_ids)
        texts = [template_ids] * count
    packed = pack_video_text(texts, visual_ids, cls_token_id=cls_token_id,
                             sep_token_id=sep_token_id, bridge_token_id=bridge_token_id,
                             max_text_length=max_text_length, max_visual_length=max_visual_length,
                             pad_token_id=pad_token_id, visual_mask=visual_mask)
    # [CLS] comes first, so blank i of the template sits at position i + 1.
    packed["mask_positions"] = np.tile(np.asarray(blanks, np.int32)[None] + 1, (count, 1))
    logits = pretrainer.masked_logits(packed, batch_size=batch_size).astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    width = max(len(group) for group in candidate_ids)
    scores = np.full((count, len(blanks), width), -np.inf)
    for blank, group in enumerate(candidate_ids):
        scores[:, blank, :len(group)] = log_probabilities[:, blank, group]
    if visual_ids is None and num_examples is not None:
        scores = np.repeat(scores, num_examples, axis=0)
    return scores.argmax(-1).astype(np.int32), scores.astype(np.float32)


def evaluate_masked_visual_prediction(pretrainer, visual_ids, text_ids=None, *,
                                      text_vocabulary_size, mask_token_id, cls_token_id,
                                      sep_token_id, bridge_token_id, max_text_length,
                                      max_visual_length, pad_token_id=0, visual_mask=None,
                                      mask_rate=0.15, reference_visual_ids=None, seed=0,
                                      rounds=1, batch_size=64):
    """Accuracy of predicting masked visual words, beside two trivial baselines.

    Masks `mask_rate` of the visual words of each video (all replaced by [MASK]; text, if
    given, stays whole) and reads the masked-token head, restricted to the visual words.

    Args:
        pretrainer: a trained `VideoBERTPretrainer`.
        visual_ids: visual word ids per video (already offset into the joint vocabulary).
        text_ids: optional captions (one id list per video): joint examples instead of
            video-only ones.
        text_vocabulary_size: where the visual words start.
        mask_token_id, cls_token_id, sep_token_id, bridge_token_id, max_text_length,
            max_visual_length, pad_token_id, visual_mask: as in `pack_video_text`.
        mask_rate: share of the visual words masked.
        reference_visual_ids: visual words of the training videos, for the most-frequent
            baseline (defaults to `visual_ids`).
        seed: of the masks.
        rounds: independent masks drawn (seeds `seed`, `seed + 1`, ...), scored together:
            more masked words, hence more of the rare `changed` ones.

    Returns:
        dict of `accuracy` (the model), `most_frequent_baseline` (always the most common
        visual word), `copy_neighbor_baseline` (the nearest unmasked visual word of the
        same video, earlier one first) and `count` (masked visual words scored), and the
        same four under `changed`, over the masked words that differ from both their
        neighbouring frames' words (one neighbour at a video's ends): where words stay
        put for several frames copying a neighbour is right almost always, and only these
        positions show whether the model predicts how the video goes on.

    Example:
    >>> result = evaluate_masked_visual_prediction(pretrainer, test_visual_ids,
    ...     text_vocabulary_size=64, mask_token_id=4, cls_token_id=2, sep_token_id=3,
    ...     bridge_token_id=5, max_text_length=8, max_visual_length=8)
    >>> result["accuracy"], result["copy_neighbor_baseline"], result["changed"]["accuracy"]
    """
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"`rounds` must be a positive int; received {rounds!r}.")
    vocabulary_size = pretrainer.backbone.vocabulary_size
    packed = pack_video_text(text_ids, visual_ids, cls_token_id=cls_token_id,
                             sep_token_id=sep_token_id, bridge_token_id=bridge_token_id,
                             max_text_length=max_text_length, max_visual_length=max_visual_length,
                             pad_token_id=pad_token_id, visual_mask=visual_mask)
    token_ids = packed["token_ids"]
    is_visual = token_ids >= text_vocabulary_size
    if not is_visual.any():
        raise ValueError(f"`visual_ids` holds no ids >= `text_vocabulary_size` "
                         f"({text_vocabulary_size}).")
    reference = np.asarray(visual_ids if reference_visual_ids is None else reference_visual_ids)
    reference = reference[reference >= text_vocabulary_size]
    most_frequent = np.bincount(reference).argmax()
    # Only visual words are candidates: every text id is treated as special here.
    specials = np.unique(np.concatenate([np.arange(text_vocabulary_size), [pad_token_id]]))
    columns = {"correct": [], "frequent": [], "copied": [], "changed": []}
    for round_index in range(rounds):
        masked = mask_video_text(token_ids, text_vocabulary_size,
                                 vocabulary_size - text_vocabulary_size, mask_token_id,
                                 special_token_ids=specials, mask_rate=mask_rate,
                                 mask_token_rate=1.0, random_token_rate=0.0,
                                 rng=seed + round_index)
        inputs = {**packed, "token_ids": masked["token_ids"],
                  "mask_positions": masked["mask_positions"]}
        logits = pretrainer.masked_logits(inputs, batch_size=batch_size)
        predictions = logits[..., text_vocabulary_size:].argmax(-1) + text_vocabulary_size
        corrupted = masked["token_ids"]
        for row, column in zip(*np.nonzero(masked["mask_weights"] > 0)):
            position = masked["mask_positions"][row, column]
            target = masked["mask_ids"][row, column]
            visible = np.flatnonzero(corrupted[row] >= text_vocabulary_size)
            copied = -1
            if len(visible):
                distance = np.abs(visible - position) * 2 + (visible > position)  # earlier first
                copied = corrupted[row, visible[distance.argmin()]]
            # The original words of the frames just before and after (visual ids only).
            neighbours = [token_ids[row, p] for p in (position - 1, position + 1)
                          if 0 <= p < token_ids.shape[1] and is_visual[row, p]]
            columns["correct"].append(predictions[row, column] == target)
            columns["frequent"].append(target == most_frequent)
            columns["copied"].append(copied == target)
            columns["changed"].append(bool(neighbours) and all(n != target for n in neighbours))
    columns = {k: np.asarray(v, bool) for k, v in columns.items()}

    def scores(selected):
        count = int(selected.sum())
        if not count:
            return {"accuracy": None, "most_frequent_baseline": None,
                    "copy_neighbor_baseline": None, "count": 0}
        return {"accuracy": float(columns["correct"][selected].mean()),
                "most_frequent_baseline": float(columns["frequent"][selected].mean()),
                "copy_neighbor_baseline": float(columns["copied"][selected].mean()),
                "count": count}

    return {**scores(np.ones_like(columns["changed"])), "changed": scores(columns["changed"])}
