"""Swin image classification: a backbone, its mean-pooled features, a Dense `classifier`."""

import keras

from keras_bigmodels.preprocessing import image_preprocessor
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.swin.backbone import SwinBackbone

__all__ = ["SwinImageClassifier", "image_preprocessor"]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class SwinImageClassifier(Task):
    """Swin with a linear head on the mean-pooled last stage; logits out.

    Compiled on construction with AdamW (lr 1e-3, weight decay 0.05), sparse
    categorical cross-entropy on logits and accuracy; call `compile` to change them.
    Preprocess images with `image_preprocessor(...)` in the data pipeline.

    Args:
        backbone: a `SwinBackbone`.
        num_classes: number of classes.
        dropout: dropout before the head.

    Example:
    >>> backbone = SwinBackbone(image_size=32, patch_size=2, hidden_dim=16, depths=[2, 2],
    ...                         num_heads=[2, 4], window_size=4, num_channels=1)
    >>> model = SwinImageClassifier(backbone, num_classes=10)
    >>> model.fit(x_train, y_train, epochs=5)
    """

    backbone_cls = SwinBackbone

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

    @classmethod
    def from_huggingface(cls, path, num_classes=None, **kwargs):
        """Load a local HF `SwinForImageClassification` (head included) or `SwinModel`
        (new head of `num_classes`) checkpoint directory.

        Example:
        >>> model = SwinImageClassifier.from_huggingface("swin-tiny-patch4-window7-224/")
        """
        from keras_bigmodels.models.swin.huggingface import load_swin_backbone

        backbone, _, loader = load_swin_backbone(SwinBackbone, path)
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
