"""UniVL's pretraining inputs (Luo et al. 2020), pure numpy: masked text, masked frames and
the caption the decoder reconstructs, from one batch of text–video pairs.

One call of `univl_batch` gives every input of `UniVLPretrainer`'s five objectives:

- the clean text and frames (video–text joint loss, on the two encoders alone);
- the text masked as BERT's MLM (`masked_lm.mask_tokens`, 15%: the conditioned masked
  language model) and, with probability `whole_text_mask_rate`, every text token masked
  (the paper's "enhanced video": 15%, so the decoder learns to caption from video alone);
- 15% of the real frames replaced by zeros, with their positions as targets (the
  conditioned masked frame model, scored by NCE over the batch's frames);
- the decoder's teacher-forced input `[CLS] w_1 .. w_n` and targets `w_1 .. w_n [SEP]`
  (language reconstruction of the original text from the masked inputs).
"""

import numpy as np

from keras_bigmodels.objectives.masked_lm import mask_tokens


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_rate(name, value, low_open=False):
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"`{name}` must be in {interval}; received {value!r}.")


def mask_frames(frames, frame_mask=None, mask_rate=0.15, rng=None):
    """Replace a share of each video's real frames by zeros; their positions are targets.

    Args:
        frames: float [batch, frames, dim] per-frame features.
        frame_mask: [batch, frames] 1 on real frames (default: all real).
        mask_rate: share of each row's real frames to mask (at least one per row).
        rng: a numpy Generator or a seed.

    Returns:
        dict of `masked_frames` (a copy, masked frames zeroed) and `frame_target_weights`
        float32 [batch, frames] (1.0 on the masked frames).

    Example:
    >>> out = mask_frames(np.ones((2, 8, 4)), rng=0)
    >>> out["frame_target_weights"].sum(axis=1)
    array([1., 1.], dtype=float32)
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 3:
        raise ValueError(f"`frames` must be [batch, frames, dim]; received shape {frames.shape}.")
    frame_mask = (np.ones(frames.shape[:2], bool) if frame_mask is None
                  else np.asarray(frame_mask).astype(bool))
    if frame_mask.shape != frames.shape[:2]:
        raise ValueError(f"`frame_mask` must be [batch, frames] = {frames.shape[:2]}; "
                         f"received shape {frame_mask.shape}.")
    _check_rate("mask_rate", mask_rate, low_open=True)
    rng = _rng(rng)
    masked = frames.copy()
    weights = np.zeros(frames.shape[:2], np.float32)
    for row in range(len(frames)):
        real = np.flatnonzero(frame_mask[row])
        if not len(real):
            continue
        count = max(1, int(round(len(real) * mask_rate)))
        chosen = rng.choice(real, size=count, replace=False)
        masked[row, chosen] = 0.0
        weights[row, chosen] = 1.0
    return {"masked_frames": masked, "frame_target_weights": weights}


def caption_targets(token_ids, padding_mask, start_token_id, end_token_id):
    """Teacher forcing for the caption decoder from `[CLS] w_1 .. w_n [SEP]` rows.

    The decoder reads `[CLS] w_1 .. w_n` and predicts `w_1 .. w_n [SEP]`: the text input
    without its last real token, and without its first.

    Args:
        token_ids: int [batch, length] rows starting with `start_token_id` and whose last
            real token is `end_token_id`, right-padded.
        padding_mask: [batch, length] 1 on real tokens.
        start_token_id, end_token_id: ids of [CLS] and [SEP].

    Returns:
        dict of `decoder_token_ids`, `decoder_padding_mask` and `decoder_target_ids`,
        each int32 [batch, length - 1] (padding weighs 0 through the mask).

    Example:
    >>> caption_targets(np.array([[2, 7, 8, 3, 0]]), np.array([[1, 1, 1, 1, 0]]), 2, 3)
    {'decoder_token_ids': array([[2, 7, 8, 0]], dtype=int32), ...}
    """
    token_ids = np.asarray(token_ids)
    mask = np.asarray(padding_mask).astype(bool)
    if token_ids.ndim != 2 or token_ids.shape[1] < 2:
        raise ValueError("`token_ids` must be [batch, length] with length >= 2; received shape "
                         f"{token_ids.shape}.")
    if mask.shape != token_ids.shape:
        raise ValueError(f"`padding_mask` must have the shape of `token_ids` {token_ids.shape}; "
                         f"received {mask.shape}.")
    lengths = mask.sum(axis=1)
    if np.any(lengths < 2) or np.any(token_ids[:, 0] != start_token_id) or np.any(
            token_ids[np.arange(len(token_ids)), lengths - 1] != end_token_id):
        raise ValueError(f"Each `token_ids` row must be [start={start_token_id}] ... "
                         f"[end={end_token_id}] followed by padding.")
    inputs = np.where(mask, token_ids, 0)[:, :-1].copy()
    inputs_mask = mask[:, :-1].copy()
    # The end token is a target, never an input (a full row's falls off the end anyway).
    rows = np.flatnonzero(lengths - 1 < inputs.shape[1])
    inputs[rows, lengths[rows] - 1] = 0
    inputs_mask[rows, lengths[rows] - 1] = False
    targets = np.where(mask, token_ids, 0)[:, 1:]
    return {"decoder_token_ids": inputs.astype(np.int32),
            "decoder_padding_mask": inputs_mask.astype(np.int32),
            "decoder_target_ids": targets.astype(np.int32)}


def univl_batch(token_ids, padding_mask, frames, frame_mask, vocabulary_size, mask_token_id,
                start_token_id, end_token_id, special_token_ids=(), mask_rate=0.15,
                frame_mask_rate=0.15, whole_text_mask_rate=0.0, max_predictions=None,
                rng=None):
    """Every input of UniVL's five objectives from a batch of `[CLS] text [SEP]` rows and
    their videos' frames.

    Args:
        token_ids: int [batch, length] `[CLS] w_1 .. w_n [SEP]`, right-padded.
        padding_mask: [batch, length] 1 on real tokens.
        frames: float [batch, frames, dim] per-frame features.
        frame_mask: [batch, frames] 1 on real frames (None: all).
        vocabulary_size, mask_token_id, special_token_ids, mask_rate, max_predictions: as
            `masked_lm.mask_tokens` (special ids are never chosen or replaced).
        start_token_id, end_token_id: [CLS] and [SEP] (the decoder's start and end).
        frame_mask_rate: share of each video's real frames masked (15%).
        whole_text_mask_rate: probability that a row's whole text is masked (the paper's
            "enhanced video" uses 0.15; 0.0 turns it off). Its MLM targets stay the chosen
            15%, now predicted from the video alone.
        rng: a numpy Generator or a seed; fresh masks need a fresh draw per epoch.

    Returns:
        dict of `token_ids`, `padding_mask`, `frames`, `frame_mask` (clean), the MLM
        inputs `masked_token_ids`, `mask_positions`, `mask_ids`, `mask_weights`, the frame
        inputs `masked_frames`, `frame_target_weights`, and the decoder's
        `decoder_token_ids`, `decoder_padding_mask`, `decoder_target_ids`.

    Example:
    >>> batch = univl_batch(np.array([[2, 7, 8, 9, 3]]), np.ones((1, 5)), np.ones((1, 8, 4)),
    ...                     None, vocabulary_size=16, mask_token_id=4, start_token_id=2,
    ...                     end_token_id=3, special_token_ids=(0, 1, 2, 3), rng=0)
    >>> batch["masked_token_ids"].shape, batch["decoder_token_ids"].shape
    ((1, 5), (1, 4))
    """
    token_ids = np.asarray(token_ids).astype(np.int32)
    padding_mask = np.asarray(padding_mask).astype(np.int32)
    frames = np.asarray(frames, np.float32)
    if frame_mask is None:
        frame_mask = np.ones(frames.shape[:2], np.int32)
    frame_mask = np.asarray(frame_mask).astype(np.int32)
    if len(token_ids) != len(frames):
        raise ValueError(f"`token_ids` ({len(token_ids)} rows) and `frames` ({len(frames)} "
                         "videos) must hold the same number of pairs.")
    _check_rate("whole_text_mask_rate", whole_text_mask_rate)
    rng = _rng(rng)
    special = set(int(t) for t in special_token_ids) | {int(start_token_id), int(end_token_id)}
    # Padding positions are special for the masking: never chosen, never replaced.
    masked_input = np.where(padding_mask.astype(bool), token_ids, -1)
    masked = mask_tokens(masked_input, vocabulary_size, mask_token_id,
                         special_token_ids=tuple(special) + (-1,), mask_rate=mask_rate,
                         max_predictions=max_predictions, rng=rng)
    corrupted = np.where(padding_mask.astype(bool), masked["token_ids"], token_ids)
    if whole_text_mask_rate > 0:
        whole = rng.random(len(token_ids)) < whole_text_mask_rate
        maskable = padding_mask.astype(bool) & ~np.isin(token_ids, sorted(special))
        corrupted = np.where(whole[:, None] & maskable, mask_token_id, corrupted)
    batch = {"token_ids": token_ids, "padding_mask": padding_mask, "frames": frames,
             "frame_mask": frame_mask, "masked_token_ids": corrupted.astype(np.int32),
             "mask_positions": masked["mask_positions"], "mask_ids": masked["mask_ids"],
             "mask_weights": masked["mask_weights"]}
    batch.update(mask_frames(frames, frame_mask, frame_mask_rate, rng=rng))
    batch.update(caption_targets(token_ids, padding_mask, start_token_id, end_token_id))
    return batch
