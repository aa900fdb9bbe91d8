"""BERT masked-LM training speed: keras_bigmodels vs keras-hub vs transformers, same work.

Reference config: 4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 8192,
sequence 128, batch 16, 20 masked positions per sequence (15%), dropout off everywhere,
AdamW(1e-4, weight decay 0.004) everywhere, no compiled metrics on any side:

    python benchmarks/bench_bert.py --backend jax --tuning ours    # or tensorflow / torch

Every contender does the same work per step: the encoder, then the MLM head (dense + GELU +
LayerNorm + tied output table) on the masked positions only, cross-entropy there; no
sentence (NSP) head, which keras-hub's `BertMaskedLM` does not have:
- ours: `BertPretrainer(sentence_task=None)`, `train_on_batch`;
- keras_hub: `BertMaskedLM` (its MLM head also gathers the masked positions);
- transformers: `BertForMaskedLM`'s encoder and head, the head applied to the gathered masked
  positions (its own forward computes full-vocabulary logits at every position: ~1.5x the
  FLOPs of the others here). That forward as shipped is the optional contender
  `transformers_full_logits`, with its own FLOP count, so its MFU is the FLOP-normalized
  comparison and its tokens/s the raw one.
MFU = tokens/s x FLOPs per token / the matmul peak measured at the start of the run, the
FLOPs per token those of the work each contender does (see `flops_per_token`).
Writes benchmarks/results/bert_<backend>_<tuning>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, max_sequence_length=128)
BATCH, SEQUENCE, PREDICTIONS = 16, 128, 20
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.004
CONTENDERS = ("ours", "keras_hub", "transformers", "transformers_full_logits")
DEFAULT_CONTENDERS = ("ours", "keras_hub", "transformers")


def flops_per_token(config, sequence_length, predicted_positions):
    """Training FLOPs per input token: 6 N_encoder + 12 L d T + head FLOPs per token.

    The MLM head (d x d transform + tied d x V output table) runs on `predicted_positions`
    of the `sequence_length` positions, so its 6 x params FLOPs count that fraction.
    """
    d, f, layers = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    head = (d * d + d) + 2 * d + (config["vocabulary_size"] * d + config["vocabulary_size"])
    encoder = 6 * layers * block + 12 * layers * d * sequence_length
    return encoder + 6 * head * predicted_positions / sequence_length


def _batch(config, batch, sequence, predictions):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(5, config["vocabulary_size"], (batch, sequence)).astype("int32")
    positions = np.sort(np.stack([rng.choice(np.arange(1, sequence), predictions,
                                             replace=False) for _ in range(batch)]),
                        axis=1).astype("int32")
    segments = np.zeros_like(ids)
    segments[:, sequence // 2:] = 1
    return {"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids),
            "mask_positions": positions, "mask_ids": np.take_along_axis(ids, positions, 1),
            "mask_weights": np.ones(positions.shape, "float32")}


def setup_ours(config, batch, sequence, predictions):
    import keras
    from keras_bigmodels.models import BertBackbone, BertPretrainer

    model = BertPretrainer(BertBackbone(**config, dropout=0.0), sentence_task=None)
    # metrics=[] and weighted_metrics=[]: the default compile reports MLM accuracy.
    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
                  metrics=[], weighted_metrics=[])
    b = _batch(config, batch, sequence, predictions)
    x = {k: b[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    step = harness.keras_train_step(model, x, {"mlm": b["mask_ids"]},
                                    sample_weight={"mlm": b["mask_weights"]})
    return {"train": harness.Measure(step, batch * sequence)}, {"parameters":
                                                                model.count_params()}


def setup_keras_hub(config, batch, sequence, predictions):
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config["vocabulary_size"], num_layers=config["num_layers"],
        num_heads=config["num_heads"], hidden_dim=config["hidden_dim"],
        intermediate_dim=config["intermediate_dim"],
        max_sequence_length=config["max_sequence_length"], dropout=0.0)
    model = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    # weighted_metrics=[]: its default compile adds an accuracy over the logits each step.
    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[])
    b = _batch(config, batch, sequence, predictions)
    x = {k: b[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    step = harness.keras_train_step(model, x, b["mask_ids"], sample_weight=b["mask_weights"])
    return {"train": harness.Measure(step, batch * sequence)}, {"parameters":
                                                                model.count_params()}


def setup_transformers(config, batch, sequence, predictions, full_logits=False):
    import torch
    import transformers

    bert_config = transformers.BertConfig(
        vocab_size=config["vocabulary_size"], hidden_size=config["hidden_dim"],
        num_hidden_layers=config["num_layers"], num_attention_heads=config["num_heads"],
        intermediate_size=config["intermediate_dim"],
        max_position_embeddings=config["max_sequence_length"], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    model = transformers.BertForMaskedLM(bert_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    b = {k: torch.tensor(v, dtype=torch.float32 if k == "mask_weights" else torch.long)
         for k, v in _batch(config, batch, sequence, predictions).items()}
    inputs = dict(input_ids=b["token_ids"], token_type_ids=b["segment_ids"],
                  attention_mask=b["padding_mask"])
    if full_logits:
        labels = torch.full((batch, sequence), -100, dtype=torch.long)
        labels.scatter_(1, b["mask_positions"], b["mask_ids"])

        def loss():
            return model(**inputs, labels=labels).loss
    else:
        gather = b["mask_positions"][:, :, None].expand(-1, -1, config["hidden_dim"])

        def loss():
            hidden = model.bert(**inputs).last_hidden_state
            logits = model.cls.predictions(torch.gather(hidden, 1, gather))
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b["mask_ids"].reshape(-1))

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad()

    return {"train": harness.Measure(step, batch * sequence)}, {
        "parameters": sum(p.numel() for p in model.parameters()),
        "mlm_logits": "all positions" if full_logits else "masked positions"}


def setup_transformers_full_logits(config, batch, sequence, predictions):
    return setup_transformers(config, batch, sequence, predictions, full_logits=True)


SETUPS = {name: f"setup_{name}" for name in CONTENDERS}
LABELS = {"ours": "keras_bigmodels", "keras_hub": "keras-hub BertMaskedLM",
          "transformers": "transformers BertForMaskedLM (head on masked positions)",
          "transformers_full_logits": "transformers BertForMaskedLM as shipped "
                                      "(full-vocabulary logits at every position)"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_arguments(parser)
    parser.add_argument("--contenders", nargs="+", default=list(DEFAULT_CONTENDERS),
                        choices=CONTENDERS)
    args = parser.parse_args(argv)
    kwargs = dict(config=CONFIG, batch=BATCH, sequence=SEQUENCE, predictions=PREDICTIONS)
    contenders = [harness.Contender(name, "bench_bert", SETUPS[name],
                                    library=name.split("_full")[0] if name != "keras_hub"
                                    else name,
                                    framework="torch" if name.startswith("transformers")
                                    else args.backend, kwargs=kwargs, label=LABELS[name])
                  for name in args.contenders]
    masked = flops_per_token(CONFIG, SEQUENCE, PREDICTIONS)
    flops = {"train": {name: masked for name in args.contenders}}
    flops["train"]["transformers_full_logits"] = flops_per_token(CONFIG, SEQUENCE, SEQUENCE)
    notes = ["MLM only on every side (keras-hub's BertMaskedLM has no NSP head), head on the "
             "masked positions; transformers_full_logits (if run) computes full-vocabulary "
             "logits at every position, as BertForMaskedLM ships: compare it by MFU "
             "(FLOP-normalized) next to its raw tokens/s.",
             "The backbones of ours and keras-hub also run their pooler (one d x d matmul "
             "on the first token of each sequence, under 0.1% of the step's FLOPs); "
             "transformers' BertForMaskedLM has none."]
    return harness.run("bert", contenders, args, config=kwargs, flops_per_unit=flops,
                       notes=notes)


if __name__ == "__main__":
    main()
