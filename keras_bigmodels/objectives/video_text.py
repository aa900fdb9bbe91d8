"""VideoBERT's pretraining examples (Sun et al. 2019, section 3.2), pure numpy, seeded.

One joint vocabulary holds the text word pieces, then the visual words (ids offset by the
text vocabulary size). Three kinds of example train one BERT:

- joint: `[CLS] text [>] visual [SEP]`, masked tokens of both modalities predicted, and the
  linguistic-visual alignment label on [CLS]: 1 when the video is the caption's own, 0 when
  it was swapped for another video (the paper's analogue of next-sentence prediction);
- text-only: `[CLS] text [SEP]`, masked language modelling;
- video-only: `[CLS] visual [SEP]`, masked visual-word prediction.

Every example is padded to the same length, `max_text_length + max_visual_length + 3`, so
all kinds mix in one batch. Segment ids are 0 on the text side ([CLS], text, [>]) and 1 on
the video side (visual words, the last [SEP]). Masking reuses `masked_lm.mask_tokens` and
draws the 10% random replacements from the masked token's own modality.
"""

import numpy as np

from keras_bigmodels.objectives.masked_lm import DynamicMasking, mask_tokens

JOINT, TEXT_ONLY, VIDEO_ONLY = 0, 1, 2
EXAMPLE_KINDS = {"joint": JOINT, "text": TEXT_ONLY, "video": VIDEO_ONLY}


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _sequences(values, mask, name):
    """A list of 1-D int arrays from a list of lists or a [n, length] array (+ bool mask)."""
    if values is None:
        return None
    if mask is not None:
        values, mask = np.asarray(values), np.asarray(mask, bool)
        if values.shape != mask.shape or values.ndim != 2:
            raise ValueError(
                f"`{name}` and its mask must both be [examples, length]; received "
                f"{values.shape} and {mask.shape}."
            )
        return [np.asarray(row[keep], np.int64) for row, keep in zip(values, mask)]
    try:
        return [np.asarray(row, np.int64).reshape(-1) for row in values]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a list of id sequences or an int array.") from None


def pack_video_text(text_ids=None, visual_ids=None, *, cls_token_id, sep_token_id,
                    bridge_token_id, max_text_length, max_visual_length, pad_token_id=0,
                    visual_mask=None):
    """`[CLS] text [>] visual [SEP]` rows (or text-only / video-only), right-padded.

    Args:
        text_ids: list of text id sequences (no special tokens), or None (video-only).
        visual_ids: list of visual word id sequences (already offset into the joint
            vocabulary), a [n, frames] int array, or None (text-only).
        cls_token_id, sep_token_id, pad_token_id: BERT's special ids.
        bridge_token_id: the id of `[>]`, which joins the text and the video.
        max_text_length, max_visual_length: longer sequences are truncated.
        visual_mask: optional bool [n, frames]: False marks padding frames of `visual_ids`.

    Returns:
        dict of int32 [n, max_text_length + max_visual_length + 3] arrays `token_ids`,
        `segment_ids`, `padding_mask`.

    Example:
    >>> packed = pack_video_text([[7, 8]], [[100, 101, 102]], cls_token_id=2, sep_token_id=3,
    ...                          bridge_token_id=5, max_text_length=3, max_visual_length=4)
    >>> packed["token_ids"][0].tolist()
    [2, 7, 8, 5, 100, 101, 102, 3, 0, 0]
    """
    for name, value in (("max_text_length", max_text_length),
                        ("max_visual_length", max_visual_length)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; received {value!r}.")
    texts = _sequences(text_ids, None, "text_ids")
    videos = _sequences(visual_ids, visual_mask, "visual_ids")
    if texts is None and videos is None:
        raise ValueError("Pass `text_ids`, `visual_ids` or both.")
    if texts is not None and videos is not None and len(texts) != len(videos):
        raise ValueError(
            f"`text_ids` and `visual_ids` must pair up one to one; received {len(texts)} "
            f"and {len(videos)} examples."
        )
    count = len(texts if texts is not None else videos)
    length = max_text_length + max_visual_length + 3
    token_ids = np.full((count, length), pad_token_id, np.int32)
    segment_ids = np.zeros((count, length), np.int32)
    padding_mask = np.zeros((count, length), np.int32)
    for row in range(count):
        pieces = [np.asarray([cls_token_id])]
        segments = [0]
        if texts is not None:
            text = texts[row][:max_text_length]
            pieces.append(text)
            segments += [0] * len(text)
        if videos is not None:
            video = videos[row][:max_visual_length]
            if texts is not None:
                pieces.append(np.asarray([bridge_token_id]))
                segments.append(0)
            pieces.append(video)
            segments += [1] * len(video)
        pieces.append(np.asarray([sep_token_id]))
        segments.append(segments[-1] if videos is not None else 0)
        sequence = np.concatenate(pieces)
        token_ids[row, :len(sequence)] = sequence
        segment_ids[row, :len(sequence)] = segments
        padding_mask[row, :len(sequence)] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}


def video_text_examples(text_ids, visual_ids, *, cls_token_id, sep_token_id, bridge_token_id,
                        max_text_length, max_visual_length, pad_token_id=0, visual_mask=None,
                        kinds=("joint", "text", "video"), negative_rate=0.5, pair_keys=None,
                        rng=None):
    """VideoBERT's training examples from paired captions and visual words.

    Args:
        text_ids: list of text id sequences (one caption per video).
        visual_ids: visual word ids per video (list of sequences or [n, frames] array).
        cls_token_id, sep_token_id, bridge_token_id, pad_token_id, max_text_length,
            max_visual_length, visual_mask: as in `pack_video_text`.
        kinds: which of "joint", "text", "video" examples to build, each once per pair.
        negative_rate: share of joint examples whose video is swapped for another one
            (alignment label 0); the rest keep their own (label 1).
        pair_keys: optional [n] labels (e.g. digit * directions + direction): a swapped
            video is drawn among videos with a different key, so that a "mismatched"
            pair never describes its video by accident. Without it any other video is used.
        rng: a numpy Generator or a seed.

    Returns:
        dict of `token_ids`, `segment_ids`, `padding_mask` ([N, length] int32),
        `alignment_labels` (int32 [N]), `alignment_weights` (float32 [N]: 1.0 on joint
        examples, 0.0 on single-modality ones, whose alignment is not defined),
        `example_kind` (int32 [N]: 0 joint, 1 text-only, 2 video-only) and `pair_index`
        (int32 [N]: the caption's (or video's) index in the inputs).

    Example:
    >>> examples = video_text_examples([[7, 8], [9]], [[100, 101], [102, 103]],
    ...     cls_token_id=2, sep_token_id=3, bridge_token_id=5, max_text_length=4,
    ...     max_visual_length=2, rng=0)
    >>> examples["token_ids"].shape
    (6, 9)
    """
    kinds = tuple(kinds)
    if not kinds or any(kind not in EXAMPLE_KINDS for kind in kinds):
        raise ValueError(f"`kinds` must be a non-empty tuple of {tuple(EXAMPLE_KINDS)}; "
                         f"received {kinds!r}.")
    if not 0.0 <= negative_rate <= 1.0:
        raise ValueError(f"`negative_rate` must be in [0, 1]; received {negative_rate}.")
    rng = _rng(rng)
    texts = _sequences(text_ids, None, "text_ids")
    videos = _sequences(visual_ids, visual_mask, "visual_ids")
    if len(texts) != len(videos):
        raise ValueError(
            f"`text_ids` and `visual_ids` must pair up one to one; received {len(texts)} "
            f"and {len(videos)} examples."
        )
    count = len(texts)
    if pair_keys is not None:
        pair_keys = np.asarray(pair_keys)
        if pair_keys.shape != (count,):
            raise ValueError(f"`pair_keys` must be one key per pair ({count}); received "
                             f"shape {pair_keys.shape}.")
    layout = dict(cls_token_id=cls_token_id, sep_token_id=sep_token_id,
                  bridge_token_id=bridge_token_id, pad_token_id=pad_token_id,
                  max_text_length=max_text_length, max_visual_length=max_visual_length)
    parts = []
    for kind in kinds:
        index = np.arange(count)
        labels = np.ones(count, np.int32)
        if kind == "joint":
            video_index = index.copy()
            if count > 1:
                swap = np.flatnonzero(rng.random(count) < negative_rate)
                for row in swap:
                    if pair_keys is not None:
                        others = np.flatnonzero(pair_keys != pair_keys[row])
                    else:
                        others = np.flatnonzero(index != row)
                    if len(others):
                        video_index[row] = rng.choice(others)
                        labels[row] = 0
            packed = pack_video_text(texts, [videos[i] for i in video_index], **layout)
        elif kind == "text":
            packed = pack_video_text(texts, None, **layout)
        else:
            packed = pack_video_text(None, videos, **layout)
        packed["alignment_labels"] = labels
        packed["alignment_weights"] = np.full(count, float(kind == "joint"), np.float32)
        packed["example_kind"] = np.full(count, EXAMPLE_KINDS[kind], np.int32)
        packed["pair_index"] = index.astype(np.int32)
        parts.append(packed)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _merge_predictions(parts):
    """One fixed-size prediction list per row from several `mask_tokens` outputs, in
    position order (real predictions first, then the padding of the lists)."""
    positions = np.concatenate([part["mask_positions"] for part in parts], axis=1)
    ids = np.concatenate([part["mask_ids"] for part in parts], axis=1)
    weights = np.concatenate([part["mask_weights"] for part in parts], axis=1)
    # Padding entries sort after every real position.
    order = np.argsort(np.where(weights > 0, positions, np.iinfo(np.int32).max), axis=1,
                       kind="stable")
    return {"mask_positions": np.take_along_axis(positions, order, axis=1),
            "mask_ids": np.take_along_axis(ids, order, axis=1),
            "mask_weights": np.take_along_axis(weights, order, axis=1)}


def mask_video_text(token_ids, text_vocabulary_size, visual_vocabulary_size, mask_token_id,
                    special_token_ids=(), mask_rate=0.15, max_predictions=None,
                    mask_token_rate=0.8, random_token_rate=0.1, text_mask_rate=None,
                    visual_mask_rate=None, rng=None):
    """BERT masking over both modalities; random replacements stay in their modality.

    Args:
        token_ids: [batch, length] joint-vocabulary ids (from `video_text_examples`).
        text_vocabulary_size: visual ids start here.
        visual_vocabulary_size: number of visual words.
        mask_token_id, special_token_ids, mask_rate, max_predictions, mask_token_rate,
            random_token_rate: as in `masked_lm.mask_tokens` (special ids include [CLS],
            [SEP], [>] and padding).
        text_mask_rate, visual_mask_rate: optional rates per modality, each drawn over
            that modality's tokens of a row (e.g. a higher text rate makes joint examples
            predict more words from the video, the skill zero-shot classification uses);
            setting either masks the two modalities separately, the other at `mask_rate`.
            `max_predictions` is then the length of each modality's list.
        rng: a numpy Generator or a seed.

    Returns:
        `masked_lm.mask_tokens`'s dict (`token_ids`, `mask_positions`, `mask_ids`,
        `mask_weights`) plus `mask_is_visual` (bool [batch, max_predictions]: a real
        prediction of a visual word).

    Example:
    >>> out = mask_video_text(examples["token_ids"], 100, 16, mask_token_id=4,
    ...                       special_token_ids=(0, 2, 3, 5), rng=0)
    """
    token_ids = np.asarray(token_ids)
    rng = _rng(rng)
    total = text_vocabulary_size + visual_vocabulary_size
    if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= total):
        raise ValueError(
            f"`token_ids` must lie in [0, {total}) (text then visual vocabulary); received "
            f"values in [{token_ids.min()}, {token_ids.max()}]."
        )
    for name, value in (("text_mask_rate", text_mask_rate),
                        ("visual_mask_rate", visual_mask_rate)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(f"`{name}` must be None or in (0, 1]; received {value}.")
    common = dict(mask_token_id=mask_token_id, max_predictions=max_predictions,
                  mask_token_rate=mask_token_rate, random_token_rate=random_token_rate,
                  rng=rng)
    if text_mask_rate is None and visual_mask_rate is None:
        out = mask_tokens(token_ids, total, special_token_ids=special_token_ids,
                          mask_rate=mask_rate, **common)
    else:
        # Each modality masked on its own: the other one's ids count as special there.
        text_ids = np.arange(text_vocabulary_size)
        visual_ids = np.arange(text_vocabulary_size, total)
        specials = np.asarray(sorted(int(t) for t in special_token_ids), np.int64)
        text_part = mask_tokens(token_ids, total, mask_rate=text_mask_rate or mask_rate,
                                special_token_ids=np.union1d(specials, visual_ids), **common)
        visual_part = mask_tokens(text_part["token_ids"], total,
                                  mask_rate=visual_mask_rate or mask_rate,
                                  special_token_ids=np.union1d(specials, text_ids), **common)
        # The second pass must not pick a [MASK] the first one wrote: text ids are special
        # there, [MASK] among them, so the two position sets are disjoint.
        out = _merge_predictions([text_part, visual_part])
        out["token_ids"] = visual_part["token_ids"]
    corrupted = out["token_ids"]
    replaced = (corrupted != token_ids) & (corrupted != mask_token_id)
    rows, columns = np.nonzero(replaced)
    if len(rows):
        originals = token_ids[rows, columns]
        special = set(int(t) for t in special_token_ids) | {int(mask_token_id)}
        text_choices = np.setdiff1d(np.arange(text_vocabulary_size), sorted(special))
        visual = originals >= text_vocabulary_size
        corrupted[rows[visual], columns[visual]] = rng.integers(
            text_vocabulary_size, total, size=int(visual.sum()))
        corrupted[rows[~visual], columns[~visual]] = rng.choice(
            text_choices, size=int((~visual).sum()))
    out["mask_is_visual"] = (out["mask_weights"] > 0) & (out["mask_ids"] >= text_vocabulary_size)
    return out


class VideoTextMasking(DynamicMasking):
    """Fresh masks every epoch (RoBERTa's dynamic masking) over VideoBERT examples.

    Mismatched joint pairs (alignment label 0) predict nothing by default: their caption
    does not describe their video, so predicting its masked words beside that video would
    teach the model to ignore the video, the opposite of what zero-shot classification and
    the alignment head need. They are still corrupted like every other example (an
    unmasked row would give its alignment label away) and still train alignment.

    Args:
        examples: dict from `video_text_examples`.
        dynamic: re-mask every epoch; False masks each example once.
        seed: for reproducible masks.
        mask_mismatched: also predict the masked tokens of mismatched pairs, as BERT
            does on its random next sentences.
        **mask_kwargs: go to `mask_video_text` (`text_vocabulary_size`,
            `visual_vocabulary_size`, `mask_token_id`, `special_token_ids`, `mask_rate`,
            `text_mask_rate`, `visual_mask_rate`, ...).

    Example:
    >>> masking = VideoTextMasking(examples, text_vocabulary_size=100,
    ...     visual_vocabulary_size=16, mask_token_id=4, special_token_ids=(0, 2, 3, 5))
    >>> batch = masking.batch(np.arange(8), epoch=0)
    """

    mask_function = staticmethod(mask_video_text)

    def __init__(self, examples, dynamic=True, seed=0, mask_mismatched=False, **mask_kwargs):
        self.mask_mismatched = mask_mismatched
        super().__init__(examples, dynamic=dynamic, seed=seed, **mask_kwargs)

    def batch(self, indices, epoch=0):
        out = super().batch(indices, epoch=epoch)
        if not self.mask_mismatched and "alignment_labels" in out:
            mismatched = (out["alignment_weights"] > 0) & (out["alignment_labels"] == 0)
            for key in ("mask_weights", "mask_is_visual"):
                out[key] = np.where(mismatched[:, None], 0, out[key]).astype(out[key].dtype)
        return out
