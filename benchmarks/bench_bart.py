"""BART training and generation speed: keras_bigmodels vs keras-hub vs transformers.

Reference config (BART layout, random init): 4 encoder + 4 decoder layers, d_model 256, 4
heads, feed-forward 1024 (exact GELU), post-norm, learned positions (256 each stack), tied
embeddings, vocabulary 8192; training batch 16 of 128 encoder tokens and 32 target tokens,
teacher-forced, no padding; dropout off everywhere; AdamW(1e-4, weight decay 0.004) (ours:
kbm.optimizers.FusedAdamW, same formula, fused on torch and tensorflow), no clipping; no compiled
metrics on any side (keras-hub's default compile adds an accuracy over the logits; it is
recompiled without). Generation: encoder inputs of 128 tokens, 32 new tokens, no early stop
(transformers' forced end token off), greedy at batch 1 and 8 and beam search (4 beams) at
batch 1 and 8.

    python benchmarks/bench_bart.py --backend jax --tuning ours      # or tensorflow / torch
    python benchmarks/bench_bart.py --backend torch --rounds 3 --steps 2 --warmup 1
    python benchmarks/bench_bart.py --backend jax --contenders ours --baseline-ref HEAD~1

Every contender runs in its own process through `harness.py` (alternating rounds, medians
with min-max, JSON with commit, machine and load); the batches, prompts and steps are the
harness's seq2seq helpers, shared with bench_t5.py. Training tokens are encoder plus
target tokens (16 x (128 + 32) a step); MFU uses `harness.seq2seq_training_flops`.
Writes benchmarks/results/bart_<backend>_<tuning>.json.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256,
              intermediate_dim=1024, max_sequence_length=256)
BATCH, SOURCE, TARGET = 16, 128, 32
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.004
START_ID = 2  # BART's decoder start id (</s>)
LABELS = {"ours": "keras_bigmodels", "keras_hub": "keras-hub BartSeq2SeqLM",
          "transformers": "transformers BartForConditionalGeneration"}


def flops_per_token(config, source, target):
    """Training FLOPs per (encoder + target) token of the reference step."""
    return harness.seq2seq_training_flops(
        config["vocabulary_size"], config["hidden_dim"], config["intermediate_dim"],
        config["num_heads"], config["hidden_dim"] // config["num_heads"],
        config["num_layers"], config["num_layers"],
        source, target) / (source + target)


# ------------------------------------------------------------------------------------
# Setup functions: run inside the contenders' own processes (see harness.py).

def setup_ours(config, batch, source, target, train=True, generate=()):
    import keras
    import keras_bigmodels as kbm

    lm = kbm.models.BartSeq2SeqLM(kbm.models.BartBackbone(**config, dropout=0.0))
    lm.compile(optimizer=kbm.optimizers.FusedAdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
               metrics=[])
    measures = harness.seq2seq_measures_ours(lm, batch, source, target, train, generate)
    return measures, {"parameters": lm.count_params(),
                      "fused_loss": bool(getattr(lm, "_fused_loss", False))}


def setup_keras_hub(config, batch, source, target, train=True, generate=()):
    import keras
    import keras_hub

    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=config["vocabulary_size"], num_layers=config["num_layers"],
        num_heads=config["num_heads"], hidden_dim=config["hidden_dim"],
        intermediate_dim=config["intermediate_dim"], dropout=0.0,
        max_sequence_length=config["max_sequence_length"])
    lm = keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)

    def compile_with(sampler):
        lm.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   weighted_metrics=[], sampler=sampler)

    measures = harness.seq2seq_measures_keras_hub(lm, compile_with, START_ID, batch, source,
                                                  target, train, generate)
    return measures, {"parameters": lm.count_params()}


def setup_transformers(config, batch, source, target, train=True, generate=()):
    import torch
    import transformers

    bart_config = transformers.BartConfig(
        vocab_size=config["vocabulary_size"], d_model=config["hidden_dim"],
        encoder_layers=config["num_layers"], decoder_layers=config["num_layers"],
        encoder_attention_heads=config["num_heads"],
        decoder_attention_heads=config["num_heads"],
        encoder_ffn_dim=config["intermediate_dim"], decoder_ffn_dim=config["intermediate_dim"],
        max_position_embeddings=config["max_sequence_length"], dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, decoder_start_token_id=START_ID,
        forced_eos_token_id=None, forced_bos_token_id=None)
    model = transformers.BartForConditionalGeneration(bart_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    measures = harness.seq2seq_measures_transformers(
        model, optimizer, START_ID, config["vocabulary_size"], batch, source, target, train,
        generate)
    return measures, {"parameters": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------------------------
# Driver.

def main(argv=None):
    return harness.seq2seq_main(
        "bart", "bench_bart", LABELS, CONFIG, BATCH, SOURCE, TARGET,
        flops_per_token(CONFIG, SOURCE, TARGET),
        "the output layer, final_logits_bias and the loss",
        __doc__.splitlines()[0], argv, LEARNING_RATE, WEIGHT_DECAY)


if __name__ == "__main__":
    main()
