"""ViT training and inference speed: keras_bigmodels vs keras-hub vs transformers.

Reference config: images 64x64x3, patch 8 (64 patches + class token), 4 layers, hidden
192, 3 heads, MLP 768, 10 classes, batch 32; dropout off everywhere; AdamW(1e-4, weight
decay 0.004); no compiled metrics (the default compiles of ours and keras-hub add an
accuracy: both are recompiled without):

    python benchmarks/bench_vit.py --backend jax --tuning ours     # or tensorflow / torch

Measures training images/s (`train_on_batch`; transformers: torch eager) and inference
images/s (`predict_on_batch`; transformers: eval + no_grad), each contender in its own process
(so its peak RSS is its own), and records each model's parameter count (the architectures
must agree). MFU = images/s x 65 tokens x (6N + 12LdT) / the measured matmul peak (training),
2N + 4LdT per token for inference. Writes benchmarks/results/vit_<backend>_<tuning>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(image_size=64, patch_size=8, num_layers=4, num_heads=3, hidden_dim=192,
              intermediate_dim=768)
NUM_CLASSES, BATCH = 10, 32
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.004
CONTENDERS = ("ours", "keras_hub", "transformers")


def flops_per_image(config, num_classes, training=True):
    """6N + 12LdT per token for training (2N + 4LdT for inference), times the tokens."""
    d, f, layers = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    tokens = (config["image_size"] // config["patch_size"]) ** 2 + 1
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    patch = 3 * config["patch_size"] ** 2 * d + d
    # The patch projection runs on every patch, the classifier on the class token only.
    per_token = layers * block + patch * (tokens - 1) / tokens + (d * num_classes) / tokens
    if training:
        return tokens * (6 * per_token + 12 * layers * d * tokens)
    return tokens * (2 * per_token + 4 * layers * d * tokens)


def _data(config, batch, num_classes):
    import numpy as np

    rng = np.random.default_rng(0)
    size = config["image_size"]
    return (rng.random((batch, size, size, 3), dtype=np.float32),
            rng.integers(0, num_classes, batch).astype("int32"))


def _keras_measures(model, batch, num_classes, config):
    import keras

    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[])
    x, y = _data(config, batch, num_classes)
    return ({"train": harness.Measure(harness.keras_train_step(model, x, y), batch, "images"),
             "inference": harness.Measure(lambda: model.predict_on_batch(x), batch, "images")},
            {"parameters": model.count_params()})


def setup_ours(config, batch, num_classes):
    import keras_bigmodels as kbm

    backbone = kbm.models.ViTBackbone(**config, dropout=0.0)
    # ImageClassifier (any image backbone) replaced ViTImageClassifier; the old name keeps
    # --baseline-ref working against older commits.
    classifier = getattr(kbm.models, "ImageClassifier", None) or kbm.models.ViTImageClassifier
    model = classifier(backbone, num_classes=num_classes)
    return _keras_measures(model, batch, num_classes, config)


def setup_keras_hub(config, batch, num_classes):
    import keras_hub

    size = config["image_size"]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=config["patch_size"],
        num_layers=config["num_layers"], num_heads=config["num_heads"],
        hidden_dim=config["hidden_dim"], mlp_dim=config["intermediate_dim"])
    model = keras_hub.models.ViTImageClassifier(backbone, num_classes=num_classes,
                                                preprocessor=None)
    return _keras_measures(model, batch, num_classes, config)


def setup_transformers(config, batch, num_classes):
    import torch
    import transformers

    vit_config = transformers.ViTConfig(
        image_size=config["image_size"], patch_size=config["patch_size"],
        num_hidden_layers=config["num_layers"], num_attention_heads=config["num_heads"],
        hidden_size=config["hidden_dim"], intermediate_size=config["intermediate_dim"],
        num_labels=num_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.ViTForImageClassification(vit_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    x, y = _data(config, batch, num_classes)
    x = torch.tensor(x.transpose(0, 3, 1, 2))
    y = torch.tensor(y, dtype=torch.long)

    def train():
        model.train()
        torch.nn.functional.cross_entropy(model(x).logits, y).backward()
        optimizer.step()
        optimizer.zero_grad()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)

    return ({"train": harness.Measure(train, batch, "images"),
             "inference": harness.Measure(infer, batch, "images")},
            {"parameters": sum(p.numel() for p in model.parameters())})


LABELS = {"ours": "keras_bigmodels", "keras_hub": "keras-hub ViTImageClassifier",
          "transformers": "transformers ViTForImageClassification"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                        choices=CONTENDERS)
    args = parser.parse_args(argv)
    kwargs = dict(config=CONFIG, batch=BATCH, num_classes=NUM_CLASSES)
    contenders = [harness.Contender(name, "bench_vit", f"setup_{name}", library=name,
                                    framework="torch" if name == "transformers"
                                    else args.backend, kwargs=kwargs, label=LABELS[name])
                  for name in args.contenders]
    flops = {"train": flops_per_image(CONFIG, NUM_CLASSES),
             "inference": flops_per_image(CONFIG, NUM_CLASSES, training=False)}
    return harness.run("vit", contenders, args, config=kwargs, flops_per_unit=flops,
                       measure_order=["train", "inference"])


if __name__ == "__main__":
    main()
