"""ViT image classification: a backbone, its pooled vector, a Dense `classifier`."""

import keras

from keras_bigmodels.preprocessing import image_preprocessor
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.vit.backbone import ViTBackbone

__all__ = ["ViTImageClassifier", "image_preprocessor"]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ViTImageClassifier(Task):
    """ViT with a linear head on the pooled ([CLS] or mean) vector; logits out.

    Compiled on construction with AdamW (lr 1e-3, weight decay 0.05), sparse
    categorical cross-entropy on logits and accuracy; call `compile` to change them.
    Preprocess images with `image_preprocessor(...)` in the data pipeline.

    Args:
        backbone: a `ViTBackbone`.
        num_classes: number of classes.
        dropout: dropout before the head.

    Example:
    >>> backbone = ViTBackbone(image_size=16, patch_size=4, num_layers=2, num_heads=2,
    ...                        hidden_dim=32, intermediate_dim=64, num_channels=1)
    >>> model = ViTImageClassifier(backbone, num_classes=10)
    >>> model.fit(x_train, y_train, epochs=5)
    """

    backbone_cls = ViTBackbone

    def __init__(self, backbone, num_classes, dropout=0.0, **kwargs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer; received {num_classes!r}.")
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

    def attention_scores(self, images):
        """Per-layer attention probabilities of the backbone (see `ViTBackbone`)."""
        return self.backbone.attention_scores(images)

    @classmethod
    def from_huggingface(cls, path, num_classes=None, image_size=None, **kwargs):
        """Load a local HF `ViTForImageClassification` (head included) or `ViTModel`
        (new head of `num_classes`) checkpoint directory.

        Example:
        >>> model = ViTImageClassifier.from_huggingface("vit-base-patch16-224/")
        """
        from keras_bigmodels.models.vit.huggingface import load_vit_backbone

        backbone, _, loader = load_vit_backbone(ViTBackbone, path, image_size=image_size)
        has_head = "classifier.weight" in loader
        if has_head:
            num_classes = num_classes or int(loader.weights["classifier.weight"].shape[0])
        elif num_classes is None:
            raise ValueError(f"`{path}` has no `classifier` head; pass `num_classes` for a new one.")
        model = cls(backbone, num_classes=num_classes, **kwargs)
        head = model.get_layer("classifier")
        if has_head and head.kernel.shape[-1] == loader.weights["classifier.weight"].shape[0]:
            head.kernel.assign(loader.weights["classifier.weight"].T)
            head.bias.assign(loader.weights["classifier.bias"])
        return model
