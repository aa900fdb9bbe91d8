"""What users fit with CLIP: the contrastive image-text task, and text packing."""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.losses import ContrastiveLoss, SigmoidContrastiveLoss
from keras_bigmodels.metrics import RetrievalRecall
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.clip.backbone import CLIPBackbone
from keras_bigmodels.utils import check_in, check_positive_int

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def _token_id(tokenizer, token, attribute):
    token_to_id = getattr(tokenizer, "token_to_id", None)
    found = token_to_id(token) if token_to_id is not None else None
    return found if found is not None else getattr(tokenizer, attribute, None)


def pack_texts(texts, tokenizer, sequence_length, start_token_id=None, end_token_id=None,
               pad_token_id=0):
    """Token id rows [n, sequence_length] as CLIP reads them: start, text, end, padding.

    Texts too long are cut so that the end token is always kept (the text tower pools
    there). The ids default to the tokenizer's `<|startoftext|>` / `<|endoftext|>`
    (or its `bos_token_id` / `eos_token_id`); a tokenizer without a start token packs
    none.

    Args:
        texts: a string or a list of strings.
        tokenizer: an object whose `encode(text, add_special_tokens=False)` returns ids
            (`keras_bigmodels.tokenizers.Tokenizer`, a transformers tokenizer).
        sequence_length: row length (the text tower's `max_sequence_length`, or less).
        start_token_id, end_token_id, pad_token_id: special ids (pad 0 as OpenAI's CLIP).

    Example:
    >>> tokenizer = Tokenizer.train_bpe(["a photo of a cat"], 300,
    ...                                 special_tokens=("<|startoftext|>", "<|endoftext|>"))
    >>> pack_texts(["a photo of a cat"], tokenizer, 16).shape
    (1, 16)
    """
    if isinstance(texts, str):
        texts = [texts]
    check_positive_int("sequence_length", sequence_length)
    if start_token_id is None:
        start_token_id = _token_id(tokenizer, START_TOKEN, "bos_token_id")
    if end_token_id is None:
        end_token_id = _token_id(tokenizer, END_TOKEN, "eos_token_id")
    if end_token_id is None:
        raise ValueError("`end_token_id` is needed (CLIP pools the text at it) and the "
                         f"tokenizer has no {END_TOKEN!r} or eos token; pass it.")
    specials = [i for i in (start_token_id,) if i is not None]
    room = sequence_length - len(specials) - 1
    if room < 0:
        raise ValueError(f"`sequence_length` {sequence_length} leaves no room for the start "
                         "and end tokens.")
    rows = np.full((len(texts), sequence_length), pad_token_id, "int32")
    for row, text in zip(rows, texts):
        if not isinstance(text, str):
            raise ValueError(f"`texts` must be strings; received {type(text).__name__}.")
        ids = tokenizer.encode(text, add_special_tokens=False)
        ids = list(getattr(ids, "ids", ids))[:room]
        packed = specials + ids + [end_token_id]
        row[:len(packed)] = packed
    return rows


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class LogitBias(keras.layers.Layer):
    """A learned scalar added to the logits (SigLIP's bias, initialized to -10)."""

    def __init__(self, initial_value=-10.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, logits_shape):
        self.logit_bias = self.add_weight(
            name="logit_bias", shape=(),
            initializer=keras.initializers.Constant(self.initial_value))
        self.built = True

    def call(self, logits):
        return logits + ops.cast(self.logit_bias, logits.dtype)

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class CLIPContrastiveTask(Task):
    """Contrastive image-text pretraining of a `CLIPBackbone` with `model.fit`.

    Feed batches of matching pairs `{"images": [b, H, W, C], "token_ids": [b, length]}`
    and no labels: image i and text i are the positive pair, every other pairing in the
    batch a negative. The output is the [b, b] `logits_per_image`; the loss is CLIP's
    symmetric InfoNCE (`loss="contrastive"`) or SigLIP's pairwise sigmoid loss
    (`loss="siglip"`, which adds a learned logit bias). Metrics: image->text and
    text->image recall@1 and @5 within the batch. Under `keras.distribution` data
    parallelism on JAX the logits and the loss span the global batch (as the paper's
    all-gathered embeddings), the same numbers as one device.

    Compiled on construction with the paper's AdamW (lr 5e-4, beta_2 0.98, epsilon 1e-6,
    weight decay 0.2 except on gains, biases and the temperature); call `compile` to
    change it.

    Args:
        backbone: a `CLIPBackbone`.
        loss: "contrastive" (InfoNCE) or "siglip".
        initial_logit_bias: SigLIP's bias at initialization (-10, the paper's).

    Example:
    >>> task = CLIPContrastiveTask(CLIPBackbone.from_preset("clip-vit-base-patch32"))
    >>> task.fit({"images": images, "token_ids": pack_texts(captions, tokenizer, 77)},
    ...          batch_size=256, epochs=1)
    """

    backbone_cls = CLIPBackbone

    def __init__(self, backbone, loss="contrastive", initial_logit_bias=-10.0, **kwargs):
        if not isinstance(backbone, CLIPBackbone):
            raise ValueError("`backbone` must be a CLIPBackbone; received "
                             f"{type(backbone).__name__}.")
        check_in("loss", loss, ("contrastive", "siglip"))
        inputs = {"images": keras.Input(backbone.input["images"].shape[1:], name="images"),
                  "token_ids": keras.Input((None,), dtype="int32", name="token_ids")}
        logits = backbone(inputs)["logits_per_image"]
        if loss == "siglip":
            logits = LogitBias(initial_logit_bias, name="logit_bias")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.objective = loss
        self.initial_logit_bias = initial_logit_bias
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """The paper's AdamW, the task's loss, recall@1/5 in both directions.

        `loss` may also be "contrastive" or "siglip" (the one the task was built for) or
        any Keras loss of the [b, b] logits.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=5e-4, weight_decay=0.2,
                                               beta_2=0.98, epsilon=1e-6)
            optimizer.exclude_from_weight_decay(
                var_names=["bias", "gamma", "beta", "logit_scale"])
        if loss == "auto":
            loss = self.objective
        if isinstance(loss, str) and loss in ("contrastive", "siglip"):
            if loss != self.objective:
                raise ValueError(
                    f"This task was built for loss={self.objective!r}; build "
                    f"CLIPContrastiveTask(backbone, loss={loss!r}) instead (SigLIP needs "
                    "its learned logit bias in the model).")
            loss = ContrastiveLoss() if loss == "contrastive" else SigmoidContrastiveLoss()
        if metrics == "auto":
            metrics = [RetrievalRecall(k, direction)
                       for direction in ("image_to_text", "text_to_image") for k in (1, 5)]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    @staticmethod
    def _pair_labels(y, y_pred):
        # The pairing is the label; Keras' loss and metric containers still want a y.
        if y is not None:
            raise ValueError("CLIPContrastiveTask trains on matching pairs and takes no "
                             "labels: pass only x = {'images': ..., 'token_ids': ...}.")
        return ops.zeros_like(y_pred[:, 0])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self._pair_labels(y, y_pred), y_pred, sample_weight,
                                    training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._pair_labels(y, y_pred), y_pred, sample_weight)

    def input_ranges(self):
        return {"token_ids": (0, self.backbone.vocabulary_size)}

    def get_config(self):
        config = super().get_config()
        config.update(loss=self.objective, initial_logit_bias=self.initial_logit_bias)
        return config
