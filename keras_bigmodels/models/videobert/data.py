"""Batches for `VideoBERTPretrainer.fit`: VideoBERT examples with fresh masks per epoch."""

from keras_bigmodels.models.bert.data import BertPretrainingDataset
from keras_bigmodels.objectives.video_text import VideoTextMasking

REQUIRED_KEYS = ("token_ids", "segment_ids", "padding_mask", "alignment_labels",
                 "alignment_weights")


class VideoBERTPretrainingDataset(BertPretrainingDataset):
    """A `PyDataset` of (inputs, targets, sample_weights) for `VideoBERTPretrainer.fit`.

    BERT's pretraining batches (shuffle per epoch, dynamic masks, whole batches) with
    VideoBERT's masking and the linguistic-visual alignment label as the second target,
    weighted 1 on joint examples and 0 on text-only and video-only ones.

    Args:
        examples: dict from `objectives.video_text.video_text_examples`.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (joint, text-only and video-only examples mix).
        drop_remainder: skip the last partial batch (one compiled shape).
        dynamic, seed, mask_mismatched, **mask_kwargs: see
            `objectives.video_text.VideoTextMasking` (`text_vocabulary_size`,
            `visual_vocabulary_size`, `mask_token_id`, `special_token_ids`, `mask_rate`,
            `text_mask_rate`, `visual_mask_rate`, ...).

    Example:
    >>> data = VideoBERTPretrainingDataset(examples, batch_size=32, text_vocabulary_size=64,
    ...     visual_vocabulary_size=144, mask_token_id=4, special_token_ids=(0, 2, 3, 5))
    >>> pretrainer.fit(data, epochs=5)
    """

    masking_class = VideoTextMasking

    def __init__(self, examples, batch_size, shuffle=True, dynamic=True, seed=0,
                 drop_remainder=True, **mask_kwargs):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; received {batch_size!r}.")
        missing = set(REQUIRED_KEYS) - set(examples)
        if missing:
            raise ValueError(f"`examples` lacks {sorted(missing)}: build it with "
                             "video_text_examples.")
        super().__init__(examples, batch_size, sentence_task=None, shuffle=shuffle,
                         dynamic=dynamic, seed=seed, drop_remainder=drop_remainder,
                         **mask_kwargs)

    def __getitem__(self, index):
        x, y, sample_weight = super().__getitem__(index)
        indices = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        y["alignment"] = self.masking.examples["alignment_labels"][indices]
        sample_weight["alignment"] = self.masking.examples["alignment_weights"][indices]
        return x, y, sample_weight
