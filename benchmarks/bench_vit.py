"""ViT training and inference speed: keras_bigmodels vs keras-hub vs transformers.

Same config, same machine, same run (reference config: images 64x64x3, patch 8 (65
tokens), 4 layers, hidden 192, 3 heads, MLP 768, 10 classes, batch 32; dropout off):

    python benchmarks/bench_vit.py --backend jax        # or tensorflow / torch
    python benchmarks/bench_vit.py --backend torch --steps 10

Measures training images/s (`train_on_batch`, AdamW) and inference images/s
(`predict_on_batch`; transformers: eval + no_grad) after warm-up steps, plus the
parameter count of each model (they must agree: same architecture). transformers runs
in torch eager whatever the Keras backend. Writes benchmarks/results/vit_<backend>.json.
"""

import argparse
import json
import os
import resource
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["ours", "keras_hub", "transformers"])
    parser.add_argument("--output", default=None)
    return parser.parse_args()


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import keras_bigmodels as kbm  # noqa: E402

CONFIG = dict(image_size=64, patch_size=8, num_layers=4, num_heads=3, hidden_dim=192,
              intermediate_dim=768)
NUM_CLASSES, BATCH = 10, 32


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def data():
    rng = np.random.default_rng(0)
    size = CONFIG["image_size"]
    x = rng.random((BATCH, size, size, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype("int32")
    return x, y


def keras_measure(model, x, y):
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = BATCH / timed(lambda: model.train_on_batch(x, y), ARGS.steps, ARGS.warmup)
    infer = BATCH / timed(lambda: model.predict_on_batch(x), ARGS.steps, ARGS.warmup)
    return train, infer, model.count_params()


def ours():
    backbone = kbm.models.ViTBackbone(**CONFIG, dropout=0.0)
    model = kbm.models.ViTImageClassifier(backbone, num_classes=NUM_CLASSES)
    return keras_measure(model, *data())


def keras_hub():
    import keras_hub

    size = CONFIG["image_size"]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=CONFIG["patch_size"],
        num_layers=CONFIG["num_layers"], num_heads=CONFIG["num_heads"],
        hidden_dim=CONFIG["hidden_dim"], mlp_dim=CONFIG["intermediate_dim"])
    model = keras_hub.models.ViTImageClassifier(backbone, num_classes=NUM_CLASSES,
                                                preprocessor=None)
    return keras_measure(model, *data())


def transformers_peer():
    import torch
    import transformers

    config = transformers.ViTConfig(
        image_size=CONFIG["image_size"], patch_size=CONFIG["patch_size"],
        num_hidden_layers=CONFIG["num_layers"], num_attention_heads=CONFIG["num_heads"],
        hidden_size=CONFIG["hidden_dim"], intermediate_size=CONFIG["intermediate_dim"],
        num_labels=NUM_CLASSES)
    model = transformers.ViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = data()
    x = torch.tensor(x.transpose(0, 3, 1, 2))
    y = torch.tensor(y, dtype=torch.long)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    train = BATCH / timed(step, ARGS.steps, ARGS.warmup)
    model.eval()

    def infer_step():
        with torch.no_grad():
            model(x)

    infer = BATCH / timed(infer_step, ARGS.steps, ARGS.warmup)
    return train, infer, sum(p.numel() for p in model.parameters())


def main():
    results = {
        "backend": ARGS.backend,
        "config": {**CONFIG, "num_classes": NUM_CLASSES, "batch_size": BATCH},
        "steps": ARGS.steps,
        "models": {},
    }
    for name, fn in (("ours", ours), ("keras_hub", keras_hub),
                     ("transformers", transformers_peer)):
        if name in ARGS.skip:
            continue
        try:
            train, infer, params = fn()
        except Exception as error:  # a peer failing must not lose the other numbers
            results["models"][name] = {"error": f"{type(error).__name__}: {error}"}
            print(name, "failed:", error)
            continue
        results["models"][name] = {
            "train_images_per_second": train,
            "inference_images_per_second": infer,
            "parameters": int(params),
            "maxrss_mb_after": maxrss_mb(),
        }
        print(name, json.dumps(results["models"][name]))
    path = ARGS.output or os.path.join(os.path.dirname(__file__), "results",
                                       f"vit_{ARGS.backend}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", path)


if __name__ == "__main__":
    main()
