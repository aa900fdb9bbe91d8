"""What users fit on a BERT backbone: MLM+NSP/SOP pretraining and fine-tuning heads."""

import keras
from keras import ops

from keras_bigmodels.layers.heads import MaskedLMHead
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.inputs import LengthOf
from keras_bigmodels.models.bert.backbone import BertBackbone
from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.utils import check_in, check_positive_int

SENTENCE_TASKS = ("nsp", "sop", None)


def _initializer(backbone):
    return keras.initializers.TruncatedNormal(stddev=backbone.initializer_range)


def _backbone_inputs(backbone):
    return {name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("token_ids", "segment_ids", "padding_mask")}


def _adamw(learning_rate):
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.01)
    # BERT does not decay LayerNorm scales or biases.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


class _BertTask(Task):
    backbone_cls = BertBackbone

    @classmethod
    def from_backbone(cls, backbone, **kwargs):
        """The task on an existing (e.g. pretrained) backbone.

        Example:
        >>> classifier = BertClassifier.from_backbone(pretrainer.backbone, num_classes=2)
        """
        return cls(backbone=backbone, **kwargs)

    def _set_backbone(self, backbone, freeze_backbone):
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.trainable = False

    def input_ranges(self):
        return {"token_ids": (0, self.backbone.vocabulary_size),
                "segment_ids": (0, max(self.backbone.num_segments, 1)),
                "padding_mask": (0, 2)}

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message does not say what to pass.
        self.backbone.check_inputs(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BertPretrainer(_BertTask):
    """BERT pretraining: masked LM (tied output) + next-sentence or sentence-order head.

    Loss L = L_MLM + L_NSP (or L_SOP), the MLM term only on the masked positions (pass
    `mask_weights` as the MLM sample weight); reports MLM accuracy on those positions.

    Args:
        backbone: a `BertBackbone`.
        sentence_task: "nsp" (BERT), "sop" (ALBERT), None (RoBERTa) or "auto" (from the
            backbone: RoBERTa positions -> None, shared layers -> "sop", else "nsp").

    Inputs: dict of `token_ids`, `segment_ids`, `padding_mask`, `mask_positions`.
    Outputs: dict `mlm` [batch, predictions, vocabulary] (+ `nsp`/`sop` [batch, 2]).

    Example:
    >>> pretrainer = BertPretrainer.from_preset("bert-tiny", backbone_overrides={"vocabulary_size": 1000})
    >>> pretrainer.fit(masked_lm_dataset(...), epochs=1)
    """

    def __init__(self, backbone, sentence_task="auto", freeze_backbone=False, **kwargs):
        if sentence_task == "auto":
            if backbone.position_offset:
                sentence_task = None
            else:
                sentence_task = "sop" if backbone.share_layers else "nsp"
        check_in("sentence_task", sentence_task, SENTENCE_TASKS)
        inputs = _backbone_inputs(backbone)
        inputs["mask_positions"] = keras.Input(shape=(None,), dtype="int32",
                                               name="mask_positions")
        features = backbone({k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")})
        mlm_head = MaskedLMHead(
            backbone.token_embedding,
            activation=backbone.activation,
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            kernel_initializer=_initializer(backbone),
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )
        outputs = {"mlm": mlm_head(features["sequence_output"], inputs["mask_positions"])}
        sentence_head = None
        if sentence_task:
            sentence_head = keras.layers.Dense(2, kernel_initializer=_initializer(backbone),
                                               dtype=backbone.dtype_policy,
                                               name=f"{sentence_task}_head")
            outputs[sentence_task] = sentence_head(features["pooled_output"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone(backbone, freeze_backbone)
        self.sentence_task = sentence_task
        self.mlm_head = mlm_head
        self.sentence_head = sentence_head
        self.compile()

    def compile(self, optimizer=None, loss=None, metrics=None, weighted_metrics=None,
                learning_rate=1e-4, **kwargs):
        """AdamW (BERT's weight decay 0.01) on L_MLM + L_sentence, MLM accuracy reported."""
        # The mean over the chosen positions only (the padding of the lists weighs 0).
        sce = SparseCrossEntropy(reduction="mean_with_sample_weight")
        if loss is None:
            loss = {"mlm": sce}
            if self.sentence_task:
                loss[self.sentence_task] = SparseCrossEntropy()
        if weighted_metrics is None:
            # Keras prefixes "mlm_" only when there are several outputs; without a sentence
            # task (RoBERTa) the name must carry it, so `mlm_accuracy` is always there.
            name = "accuracy" if self.sentence_task else "mlm_accuracy"
            weighted_metrics = {"mlm": [keras.metrics.SparseCategoricalAccuracy(name)]}
        if metrics is None and self.sentence_task:
            metrics = {self.sentence_task: [keras.metrics.SparseCategoricalAccuracy("accuracy")]}
        super().compile(optimizer=optimizer or _adamw(learning_rate), loss=loss, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """Backbone + MLM head (+ NSP/SOP head) from `BertForPreTraining`,
        `RobertaForMaskedLM`, `AlbertForPreTraining`, `*ForMaskedLM` checkpoint dirs.

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: backbone constructor kwargs to change (e.g. `dropout`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: `BertPretrainer` kwargs (`sentence_task` defaults to the
                checkpoint's head).

        Example:
        >>> pretrainer = BertPretrainer.from_huggingface("checkpoints/bert-base-uncased")
        """
        from keras_bigmodels.checkpoints import dense, read_checkpoint
        from keras_bigmodels.models.bert import huggingface as hf

        hf_config, weights = read_checkpoint(path)
        kind = hf.model_type(hf_config)
        backbone = hf.build_backbone(hf_config, dtype, backbone_overrides)
        sentence_name = hf.SENTENCE_HEAD_NAMES.get(kind)
        has_sentence = sentence_name is not None and f"{sentence_name}.weight" in weights
        task_kwargs.setdefault("sentence_task", {"bert": "nsp", "albert": "sop"}[kind]
                               if has_sentence else None)
        model = cls(backbone=backbone, **task_kwargs)
        loader = hf.make_loader(weights, ignore=hf.TIED_DECODERS)
        hf.assign_backbone(backbone, loader, kind)
        hf.assign_mlm_head(model.mlm_head, loader, kind)
        if model.sentence_head is not None:
            dense(loader, model.sentence_head, sentence_name)
        loader.finish()
        return model

    def get_config(self):
        config = super().get_config()
        config.update(sentence_task=self.sentence_task, freeze_backbone=self.freeze_backbone)
        return config

    def input_ranges(self):
        return {**super().input_ranges(), "mask_positions": (0, LengthOf("token_ids"))}

    def label_range(self):
        labels = {"mlm": (0, self.backbone.vocabulary_size)}
        if self.sentence_task:
            labels[self.sentence_task] = (0, 2)
        return labels


CLASSIFIER_HEADS = ("pooler", "roberta")
# Hugging Face sequence classifiers that `BertClassifier.from_huggingface` reads, and the
# head each one puts on the encoder.
HF_CLASSIFIERS = {"BertForSequenceClassification": "pooler",
                  "AlbertForSequenceClassification": "pooler",
                  "RobertaForSequenceClassification": "roberta"}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BertClassifier(_BertTask):
    """Sequence classification on the first ([CLS] / <s>) token (GLUE-style fine-tuning).

    Args:
        backbone: a `BertBackbone`.
        num_classes: number of labels.
        dropout: before each dense layer of the head (0.1 in BERT and RoBERTa).
        head: "pooler" (BERT, ALBERT: the backbone's tanh pooler, pretrained by NSP/SOP,
            then one dense layer), "roberta" (RoBERTa, which has no pretrained pooler: its
            own dense + tanh on the first token's sequence output, then `classifier`), or
            "auto" ("roberta" for backbones with RoBERTa positions, else "pooler").
        freeze_backbone: train only the head.

    Example:
    >>> classifier = BertClassifier.from_preset("bert-tiny", num_classes=2)
    >>> classifier.fit({"token_ids": ids, "segment_ids": seg, "padding_mask": mask}, labels)
    """

    def __init__(self, backbone, num_classes, dropout=0.1, head="auto", freeze_backbone=False,
                 **kwargs):
        check_positive_int("num_classes", num_classes)
        if head == "auto":
            head = "roberta" if backbone.position_offset else "pooler"
        check_in("head", head, CLASSIFIER_HEADS)
        inputs = _backbone_inputs(backbone)
        features = backbone(inputs)
        dropout_layer = keras.layers.Dropout(dropout, name="classifier_dropout")
        head_dense = None
        if head == "pooler":
            x = dropout_layer(features["pooled_output"])
        else:
            head_dense = keras.layers.Dense(
                backbone.hidden_dim, activation="tanh", kernel_initializer=_initializer(backbone),
                dtype=backbone.dtype_policy, name="classifier_dense")
            x = dropout_layer(features["sequence_output"][:, 0, :])
            x = dropout_layer(head_dense(x))
        classifier = keras.layers.Dense(num_classes, kernel_initializer=_initializer(backbone),
                                        dtype=backbone.dtype_policy, name="classifier")
        super().__init__(inputs=inputs, outputs=classifier(x), **kwargs)
        self._set_backbone(backbone, freeze_backbone)
        self.num_classes = num_classes
        self.dropout = dropout
        self.head = head
        self.head_dense = head_dense
        self.classifier = classifier
        self.compile()

    def compile(self, optimizer=None, loss=None, metrics=None, learning_rate=5e-5, **kwargs):
        """AdamW at BERT's fine-tuning learning rate, cross-entropy, accuracy."""
        super().compile(
            optimizer=optimizer or _adamw(learning_rate),
            loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics or [keras.metrics.SparseCategoricalAccuracy("accuracy")],
            **kwargs,
        )

    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """From a `BertForSequenceClassification`, `AlbertForSequenceClassification` or
        `RobertaForSequenceClassification` checkpoint dir (backbone and head).

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: backbone constructor kwargs to change (e.g. `dropout`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: `BertClassifier` kwargs; `num_classes`, `head` and `dropout`
                default to the checkpoint's.

        Example:
        >>> classifier = BertClassifier.from_huggingface("checkpoints/roberta-sst2")
        """
        from keras_bigmodels.checkpoints import dense
        from keras_bigmodels.models.bert import huggingface as hf

        out_projections = {"bert": "classifier", "albert": "classifier",
                           "roberta": "classifier.out_proj"}
        hf_config, kind, loader = hf.read_task_checkpoint(
            path, tuple(HF_CLASSIFIERS), out_projections, "BertClassifier.from_huggingface")
        head = "roberta" if kind == "roberta" else "pooler"
        out_proj = out_projections[kind]
        task_kwargs.setdefault("num_classes", loader.weights[f"{out_proj}.weight"].shape[0])
        task_kwargs.setdefault("head", head)
        task_kwargs.setdefault("dropout", hf.head_dropout(hf_config))
        backbone = hf.build_backbone(hf_config, dtype, backbone_overrides)
        model = cls(backbone=backbone, **task_kwargs)
        if model.head != head:
            raise ValueError(f"A {kind} checkpoint's head is {head!r}; received head={model.head!r}.")
        # RoBERTa classifiers are saved without the (unused) pooler.
        hf.assign_backbone(backbone, loader, kind, warn_missing_pooler=head == "pooler")
        if head == "roberta":
            dense(loader, model.head_dense, "classifier.dense")
        dense(loader, model.classifier, out_proj)
        loader.finish()
        return model

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout, head=self.head,
                      freeze_backbone=self.freeze_backbone)
        return config

    def label_range(self):
        return (0, self.num_classes)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BertTokenClassifier(_BertTask):
    """Per-token labels (NER, tagging) from the sequence output.

    Args:
        backbone, num_classes, dropout, freeze_backbone: as in `BertClassifier`.

    Example:
    >>> tagger = BertTokenClassifier.from_preset("bert-tiny", num_classes=9)
    >>> tagger.fit(inputs, labels, sample_weight=inputs["padding_mask"])
    """

    def __init__(self, backbone, num_classes, dropout=0.1, freeze_backbone=False, **kwargs):
        check_positive_int("num_classes", num_classes)
        inputs = _backbone_inputs(backbone)
        x = backbone(inputs)["sequence_output"]
        x = keras.layers.Dropout(dropout, name="classifier_dropout")(x)
        head = keras.layers.Dense(num_classes, kernel_initializer=_initializer(backbone),
                                  dtype=backbone.dtype_policy, name="classifier")
        super().__init__(inputs=inputs, outputs=head(x), **kwargs)
        self._set_backbone(backbone, freeze_backbone)
        self.num_classes = num_classes
        self.dropout = dropout
        self.compile()

    def compile(self, optimizer=None, loss=None, weighted_metrics=None, learning_rate=5e-5,
                **kwargs):
        """Cross-entropy per token; pass `padding_mask` as sample weight to skip padding."""
        super().compile(
            optimizer=optimizer or _adamw(learning_rate),
            loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=weighted_metrics
            or [keras.metrics.SparseCategoricalAccuracy("accuracy")],
            **kwargs,
        )

    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """From a `BertForTokenClassification` (or RoBERTa's, ALBERT's) checkpoint dir.

        Args:
            path, backbone_overrides, dtype: as in `BertClassifier.from_huggingface`.
            **task_kwargs: `BertTokenClassifier` kwargs; `num_classes` and `dropout`
                default to the checkpoint's.

        Example:
        >>> tagger = BertTokenClassifier.from_huggingface("checkpoints/bert-ner")
        """
        from keras_bigmodels.models.bert import huggingface as hf

        hf_config, kind, loader = hf.read_task_checkpoint(
            path, hf.TOKEN_CLASSIFIERS, "classifier", "BertTokenClassifier.from_huggingface")
        task_kwargs.setdefault("num_classes", loader.weights["classifier.weight"].shape[0])
        task_kwargs.setdefault("dropout", hf.head_dropout(hf_config))
        backbone = hf.build_backbone(hf_config, dtype, backbone_overrides)
        return hf.assign_sequence_head_task(cls(backbone=backbone, **task_kwargs), loader,
                                            kind, "classifier")

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout,
                      freeze_backbone=self.freeze_backbone)
        return config

    def label_range(self):
        # A loss compiled with `ignore_class` (e.g. Hugging Face's -100 on sub-word
        # continuations) also allows that value; see `Task.label_range`.
        return (0, self.num_classes)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BertQuestionAnswerer(_BertTask):
    """Extractive QA (SQuAD): start and end logits over the tokens of the passage.

    Padding positions get a large negative logit so that spans stay inside the input.

    Args:
        backbone, freeze_backbone: as in `BertClassifier`.

    Outputs: dict `start_logits`, `end_logits`, each [batch, length].

    Example:
    >>> qa = BertQuestionAnswerer.from_preset("bert-tiny")
    >>> qa.fit(inputs, {"start_logits": starts, "end_logits": ends})
    """

    def __init__(self, backbone, freeze_backbone=False, **kwargs):
        inputs = _backbone_inputs(backbone)
        x = backbone(inputs)["sequence_output"]
        head = keras.layers.Dense(2, kernel_initializer=_initializer(backbone),
                                  dtype=backbone.dtype_policy, name="qa_outputs")
        logits = head(x)
        padding = ops.cast(inputs["padding_mask"], logits.dtype)
        logits = logits + (1.0 - padding[:, :, None]) * -1e9
        outputs = {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone(backbone, freeze_backbone)
        self.compile()

    def compile(self, optimizer=None, loss=None, metrics=None, learning_rate=5e-5, **kwargs):
        """Mean of start and end cross-entropies (BERT section 4.2)."""
        sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(
            optimizer=optimizer or _adamw(learning_rate),
            loss=loss or {"start_logits": sce, "end_logits": sce},
            loss_weights=kwargs.pop("loss_weights", {"start_logits": 0.5, "end_logits": 0.5}),
            metrics=metrics or {
                "start_logits": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
                "end_logits": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
            },
            **kwargs,
        )

    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """From a `BertForQuestionAnswering` (or RoBERTa's, ALBERT's) checkpoint dir.

        Args:
            path, backbone_overrides, dtype: as in `BertClassifier.from_huggingface`.
            **task_kwargs: `BertQuestionAnswerer` kwargs.

        Example:
        >>> qa = BertQuestionAnswerer.from_huggingface("checkpoints/bert-squad")
        """
        from keras_bigmodels.models.bert import huggingface as hf

        hf_config, kind, loader = hf.read_task_checkpoint(
            path, hf.QUESTION_ANSWERERS, "qa_outputs", "BertQuestionAnswerer.from_huggingface")
        backbone = hf.build_backbone(hf_config, dtype, backbone_overrides)
        return hf.assign_sequence_head_task(cls(backbone=backbone, **task_kwargs), loader,
                                            kind, "qa_outputs")

    def get_config(self):
        config = super().get_config()
        config.update(freeze_backbone=self.freeze_backbone)
        return config

    def label_range(self):
        position = (0, LengthOf("token_ids"))
        return {"start_logits": position, "end_logits": position}
