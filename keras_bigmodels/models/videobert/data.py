"""Batches for `VideoBERTPretrainer.fit`: VideoBERT examples with fresh masks per epoch."""

import math

import keras
import numpy as np

from keras_bigmodels.objectives.video_text import VideoTextMasking


class VideoBERTPretrainingDataset(keras.utils.PyDataset):
    """A `PyDataset` of (inputs, targets, sample_weights) for `VideoBERTPretrainer.fit`.

    Args:
        examples: dict from `objectives.video_text.video_text_examples`.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (joint, text-only and video-only examples mix).
        drop_remainder: skip the last partial batch (one compiled shape).
        dynamic, seed, **mask_kwargs: see `objectives.video_text.VideoTextMasking`
            (`text_vocabulary_size`, `visual_vocabulary_size`, `mask_token_id`,
            `special_token_ids`, `mask_rate`, ...).

    Example:
    >>> data = VideoBERTPretrainingDataset(examples, batch_size=32, text_vocabulary_size=64,
    ...     visual_vocabulary_size=144, mask_token_id=4, special_token_ids=(0, 2, 3, 5))
    >>> pretrainer.fit(data, epochs=5)
    """

    def __init__(self, examples, batch_size, shuffle=True, dynamic=True, seed=0,
                 drop_remainder=True, **mask_kwargs):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; received {batch_size!r}.")
        missing = {"token_ids", "segment_ids", "padding_mask", "alignment_labels",
                   "alignment_weights"} - set(examples)
        if missing:
            raise ValueError(f"`examples` lacks {sorted(missing)}: build it with video_text_examples.")
        self.masking = VideoTextMasking(examples, dynamic=dynamic, seed=seed, **mask_kwargs)
        self.batch_size = batch_size
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
        y = {"mlm": batch["mask_ids"], "alignment": batch["alignment_labels"]}
        sample_weight = {"mlm": batch["mask_weights"], "alignment": batch["alignment_weights"]}
        return x, y, sample_weight

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()
