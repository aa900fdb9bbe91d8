"""Image classification on any image backbone: its pooled vector, dropout, a Dense head."""

import importlib

import keras

from keras_bigmodels import presets
from keras_bigmodels.models.base import Task
from keras_bigmodels.utils import check_positive_int

# The image backbones this task loads by name: preset family (= HF config.json model_type)
# -> backbone class, imported on use so that this task depends on no family. A backbone's
# `huggingface_mapping` module offers `read_backbone(cls, path, dtype, **overrides)`,
# returning (backbone, loader) with the `classifier.*` head still unread. A new image
# family adds one line here.
IMAGE_BACKBONES = {
    "vit": "keras_bigmodels.models.vit.backbone.ViTBackbone",
    "swin": "keras_bigmodels.models.swin.backbone.SwinBackbone",
}


def _image_backbone(family, reader):
    if family not in IMAGE_BACKBONES:
        raise ValueError(f"{reader} builds on the image families "
                         f"{', '.join(repr(f) for f in IMAGE_BACKBONES)}; received {family!r}.")
    module, name = IMAGE_BACKBONES[family].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ImageClassifier(Task):
    """A linear head on an image backbone's `pooled_output` (ViT's [CLS] or mean, Swin's
    mean over the last stage); logits out.

    Compiled on construction with AdamW (lr 1e-3, weight decay 0.05), sparse
    categorical cross-entropy on logits and accuracy; call `compile` to change them.
    Preprocess images with `keras_bigmodels.preprocessing.image_preprocessor(...)` in the
    data pipeline.

    Args:
        backbone: an image backbone whose outputs include `pooled_output` (`ViTBackbone`,
            `SwinBackbone`).
        num_classes: number of classes.
        dropout: dropout before the head.

    Example:
    >>> backbone = ViTBackbone(image_size=16, patch_size=4, num_layers=2, num_heads=2,
    ...                        hidden_dim=32, intermediate_dim=64, num_channels=1)
    >>> model = ImageClassifier(backbone, num_classes=10)
    >>> model.fit(x_train, y_train, epochs=5)
    """

    def __init__(self, backbone, num_classes, dropout=0.0, **kwargs):
        check_positive_int("num_classes", num_classes)
        if not isinstance(backbone.output, dict) or "pooled_output" not in backbone.output:
            raise ValueError("`backbone` must be an image backbone with a `pooled_output` "
                             f"output (ViTBackbone, SwinBackbone); received {backbone.name!r}.")
        images = keras.Input(backbone.input.shape[1:], name="images")
        pooled = backbone(images)["pooled_output"]
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, name="classifier")(pooled)
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = dropout
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """AdamW (lr 1e-3, weight decay 0.05), cross-entropy on logits, accuracy."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout)
        return config

    def label_range(self):
        return (0, self.num_classes)

    @classmethod
    def from_preset(cls, name, backbone_overrides=None, **task_kwargs):
        """A classifier on a random-init backbone of an image preset.

        Example:
        >>> model = ImageClassifier.from_preset("vit-tiny-patch16-224", num_classes=10)
        """
        family = presets.get_preset(name)["family"]
        backbone_cls = _image_backbone(family, "ImageClassifier.from_preset")
        return cls(backbone_cls.from_preset(name, **(backbone_overrides or {})), **task_kwargs)

    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """A local HF `ViTForImageClassification` / `SwinForImageClassification` (head
        included) or `ViTModel` / `SwinModel` (a new head of `num_classes`) directory.

        config.json's `model_type` picks the backbone. A `num_classes` other than the
        checkpoint's gives a new, randomly initialized head on the pretrained backbone.

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: backbone constructor kwargs to change (e.g. ViT's
                `image_size`, which interpolates the position table).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: `ImageClassifier` kwargs (`num_classes`, `dropout`).

        Example:
        >>> model = ImageClassifier.from_huggingface("vit-base-patch16-224/")
        """
        from keras_bigmodels.checkpoints import dense, read_config

        family = read_config(path).get("model_type")
        backbone_cls = _image_backbone(family, "ImageClassifier.from_huggingface")
        mapping = importlib.import_module(backbone_cls.huggingface_mapping)
        backbone, loader = mapping.read_backbone(backbone_cls, path, dtype=dtype,
                                                 **(backbone_overrides or {}))
        checkpoint_classes = (loader.weights["classifier.weight"].shape[0]
                              if "classifier.weight" in loader else None)
        num_classes = task_kwargs.pop("num_classes", checkpoint_classes)
        if num_classes is None:
            raise ValueError(f"`{path}` has no `classifier` head; pass `num_classes` for a "
                             "new one.")
        model = cls(backbone, num_classes=num_classes, **task_kwargs)
        if num_classes == checkpoint_classes:
            dense(loader, model.get_layer("classifier"), "classifier")
        loader.finish(ignore=(r"classifier\..*",))
        return model
