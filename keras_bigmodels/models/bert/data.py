"""Batches for `BertPretrainer.fit`: packed examples + MLM targets (+ NSP/SOP labels)."""

import math

import keras
import numpy as np

from keras_bigmodels.objectives.masked_lm import DynamicMasking


class BertPretrainingDataset(keras.utils.PyDataset):
    """A `PyDataset` of (inputs, targets, sample_weights) for `BertPretrainer.fit`.

    Masks are drawn fresh every epoch (RoBERTa's dynamic masking) unless
    `dynamic=False` (BERT's static masks); the MLM loss is weighted by `mask_weights` so
    only the chosen positions count.

    Args:
        examples: dict from `sentence_pairs.next_sentence_pairs` (with `labels`) or
            `full_sentence_packing` (without).
        batch_size: examples per batch.
        sentence_task: "nsp", "sop" or None: the key of the sentence labels in the targets
            (must match the pretrainer's `sentence_task`).
        shuffle: reshuffle the examples every epoch.
        drop_remainder: skip the last partial batch (one compiled shape, no retracing).
        dynamic, seed, **mask_kwargs: see `objectives.masked_lm.DynamicMasking`
            (`vocabulary_size`, `mask_token_id`, `special_token_ids`, `mask_rate`, ...).

    Example:
    >>> data = BertPretrainingDataset(pairs, batch_size=32, sentence_task="nsp",
    ...                               vocabulary_size=8000, mask_token_id=4,
    ...                               special_token_ids=(0, 2, 3))
    >>> pretrainer.fit(data, epochs=3)
    """

    # The masking transform's batcher; VideoBERT's dataset sets its own.
    masking_class = DynamicMasking

    def __init__(self, examples, batch_size, sentence_task="nsp", shuffle=True, dynamic=True,
                 seed=0, drop_remainder=True, **mask_kwargs):
        super().__init__()
        if sentence_task and "labels" not in examples:
            raise ValueError(
                f"sentence_task={sentence_task!r} needs `labels` in `examples` (from "
                "next_sentence_pairs); use sentence_task=None for full_sentence_packing."
            )
        self.masking = self.masking_class(examples, dynamic=dynamic, seed=seed, **mask_kwargs)
        self.batch_size = batch_size
        self.sentence_task = sentence_task
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder and len(self.masking) >= batch_size
        self.seed = seed
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self):
        order = np.arange(len(self.masking))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        return order

    def __len__(self):
        rounding = math.floor if self.drop_remainder else math.ceil
        return rounding(len(self.masking) / self.batch_size)

    def __getitem__(self, index):
        indices = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = self.masking.batch(indices, epoch=self.epoch)
        x = {k: batch[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
        y = {"mlm": batch["mask_ids"]}
        sample_weight = {"mlm": batch["mask_weights"]}
        if self.sentence_task:
            y[self.sentence_task] = batch["labels"]
            sample_weight[self.sentence_task] = np.ones(len(indices), "float32")
        return x, y, sample_weight

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()
