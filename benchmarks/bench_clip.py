"""CLIP contrastive training speed: keras_bigmodels vs keras-hub vs transformers.

Reference config (random init): images 64x64x3, patch 8 (64 patches + class token),
4 vision and 4 text layers, width 256, 4 heads, MLP 1024, quick-GELU, text length 32,
vocabulary 8192, projection 256; batch 32 image-text pairs; dropout off everywhere;
AdamW(5e-4, beta_2 0.98, epsilon 1e-6, weight decay 0.2 on every weight) everywhere; no
compiled metrics on any side (ours defaults to recall@1/5 in both directions: recompiled
without). The loss is CLIP's symmetric InfoNCE over the batch on every side: ours
`CLIPContrastiveTask`, keras-hub `CLIPBackbone`'s `vision_logits` under the same loss
written here (`symmetric_info_nce`), transformers `CLIPModel(..., return_loss=True)`.

    python benchmarks/bench_clip.py --backend jax --tuning ours     # or tensorflow / torch
    python benchmarks/bench_clip.py --backend jax --rounds 3 --steps 1 --warmup 1

Every contender runs in its own process through `harness.py` (alternating rounds, medians
with min-max, JSON with commit, machine and load). Images/s count image-text pairs; MFU
uses `flops_per_pair`. Writes benchmarks/results/clip_<backend>_<tuning>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, sequence_length=32, vocabulary_size=8192,
              projection_dim=256)
BATCH = 32
LEARNING_RATE, WEIGHT_DECAY, BETA_2, EPSILON = 5e-4, 0.2, 0.98, 1e-6
CONTENDERS = ("ours", "keras_hub", "transformers")
LABELS = {"ours": "keras_bigmodels", "keras_hub": "keras-hub CLIPBackbone",
          "transformers": "transformers CLIPModel"}


def flops_per_pair(config, batch):
    """Training FLOPs of one image-text pair (forward + backward = 3 x forward): every
    matmul of both towers on their tokens (patch embedding on the patches, projections on
    the pooled token), attention scores and products, and the pair's row of the
    [batch, batch] similarity matrix. Norms, softmax and lookups are left out."""
    d, f, layers = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    patches = (config["image_size"] // config["patch_size"]) ** 2
    text = config["sequence_length"]
    projection = config["projection_dim"]

    def tower(tokens):
        return layers * tokens * (2 * (4 * d * d + 2 * d * f) + 4 * tokens * d)

    forward = (tower(patches + 1) + tower(text) + 2 * patches * 3 * config["patch_size"] ** 2 * d
               + 2 * 2 * d * projection + 2 * batch * projection)
    return 3 * forward


def make_batch(config, batch):
    """Images in [0, 1] [batch, H, W, 3] float32 and token ids [batch, length] int32 whose
    last id is the largest (every side pools the text there: argmax, OpenAI's CLIP)."""
    import numpy as np

    rng = np.random.default_rng(0)
    size, vocabulary = config["image_size"], config["vocabulary_size"]
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    tokens = rng.integers(1, vocabulary - 1, (batch, config["sequence_length"])).astype("int32")
    tokens[:, -1] = vocabulary - 1
    return images, tokens


def _optimizer_keras():
    import keras

    return keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY, beta_2=BETA_2,
                                  epsilon=EPSILON)


def symmetric_info_nce(y_true, logits_per_image):
    """CLIP's loss: mean of cross-entropies image->text and text->image, pair i true."""
    import keras
    from keras import ops

    labels = ops.arange(ops.shape(logits_per_image)[0])
    forward = keras.losses.sparse_categorical_crossentropy(labels, logits_per_image,
                                                           from_logits=True)
    backward = keras.losses.sparse_categorical_crossentropy(
        labels, ops.transpose(logits_per_image), from_logits=True)
    return (forward + backward) / 2.0


# ------------------------------------------------------------------------------------
# Setup functions: run inside the contenders' own processes (see harness.py).

def setup_ours(config, batch):
    import keras_bigmodels as kbm

    c = config
    backbone = kbm.models.CLIPBackbone(
        image_size=c["image_size"], patch_size=c["patch_size"],
        vision_num_layers=c["num_layers"], vision_num_heads=c["num_heads"],
        vision_hidden_dim=c["hidden_dim"], vision_intermediate_dim=c["intermediate_dim"],
        vocabulary_size=c["vocabulary_size"], max_sequence_length=c["sequence_length"],
        text_num_layers=c["num_layers"], text_num_heads=c["num_heads"],
        text_hidden_dim=c["hidden_dim"], text_intermediate_dim=c["intermediate_dim"],
        projection_dim=c["projection_dim"], dropout=0.0)
    task = kbm.models.CLIPContrastiveTask(backbone)
    task.compile(optimizer=_optimizer_keras(), metrics=[])
    images, tokens = make_batch(config, batch)
    step = harness.keras_train_step(task, {"images": images, "token_ids": tokens}, None)
    return ({"train": harness.Measure(step, batch, "images")},
            {"parameters": task.count_params()})


def setup_keras_hub(config, batch):
    import keras
    import keras_hub
    import numpy as np

    c = config
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=c["patch_size"], hidden_dim=c["hidden_dim"], num_layers=c["num_layers"],
        num_heads=c["num_heads"], intermediate_dim=c["intermediate_dim"],
        image_shape=(c["image_size"], c["image_size"], 3))
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=c["vocabulary_size"], embedding_dim=c["hidden_dim"],
        hidden_dim=c["hidden_dim"], num_layers=c["num_layers"], num_heads=c["num_heads"],
        intermediate_dim=c["intermediate_dim"], max_sequence_length=c["sequence_length"])
    backbone = keras_hub.models.CLIPBackbone(vision, text, projection_dim=c["projection_dim"])
    # keras-hub has no CLIP training task: its [images, texts] logits under the same loss.
    model = keras.Model(backbone.input, backbone.output["vision_logits"])
    model.compile(optimizer=_optimizer_keras(), loss=symmetric_info_nce, metrics=[])
    images, tokens = make_batch(config, batch)
    step = harness.keras_train_step(model, {"images": images, "token_ids": tokens},
                                    np.zeros((batch,), "int32"))
    return ({"train": harness.Measure(step, batch, "images")},
            {"parameters": model.count_params()})


def setup_transformers(config, batch):
    import torch
    import transformers

    c = config
    clip_config = transformers.CLIPConfig(
        text_config=dict(vocab_size=c["vocabulary_size"], hidden_size=c["hidden_dim"],
                         intermediate_size=c["intermediate_dim"],
                         num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                         max_position_embeddings=c["sequence_length"], eos_token_id=2,
                         attention_dropout=0.0),
        vision_config=dict(hidden_size=c["hidden_dim"], intermediate_size=c["intermediate_dim"],
                           num_hidden_layers=c["num_layers"],
                           num_attention_heads=c["num_heads"], image_size=c["image_size"],
                           patch_size=c["patch_size"], attention_dropout=0.0),
        projection_dim=c["projection_dim"])
    model = transformers.CLIPModel(clip_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  betas=(0.9, BETA_2), eps=EPSILON, weight_decay=WEIGHT_DECAY)
    images, tokens = make_batch(config, batch)
    pixels = torch.tensor(images.transpose(0, 3, 1, 2))
    input_ids = torch.tensor(tokens, dtype=torch.long)

    def train():
        model.train()
        model(input_ids=input_ids, pixel_values=pixels, return_loss=True).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return ({"train": harness.Measure(train, batch, "images")},
            {"parameters": sum(p.numel() for p in model.parameters())})


SETUPS = {"ours": "setup_ours", "keras_hub": "setup_keras_hub",
          "transformers": "setup_transformers"}


def contenders(names, backend, **kwargs):
    return [harness.Contender(name, "bench_clip", SETUPS[name], library=name,
                              framework="torch" if name == "transformers" else backend,
                              kwargs=kwargs, label=LABELS[name]) for name in names]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                        choices=CONTENDERS)
    args = parser.parse_args(argv)
    harness.check_arguments(args)
    kwargs = dict(config=dict(CONFIG), batch=BATCH)
    notes = [
        "Same work per step on every side: both towers on 32 images and 32 texts, the "
        "[32, 32] scaled cosine similarities, symmetric InfoNCE (mean of the image->text and "
        "text->image cross-entropies), backward, AdamW(5e-4, beta_2 0.98, epsilon 1e-6, "
        "weight decay 0.2 on every weight); no compiled metrics; dropout off.",
        "Text pooling at the largest id (the last token here) on every side; causal text "
        "attention, no padding.",
        "transformers is plain PyTorch eager whatever the Keras backend.",
    ]
    return harness.run("clip", contenders(args.contenders, args.backend, **kwargs), args,
                       config=kwargs, notes=notes,
                       flops_per_unit={"train": flops_per_pair(CONFIG, BATCH)},
                       measure_order=["train"])


if __name__ == "__main__":
    main()
