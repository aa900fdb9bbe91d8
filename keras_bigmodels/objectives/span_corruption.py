"""T5's span corruption (Raffel et al. 2020, Sec. 3.1.4 and 3.3.4), pure numpy.

A fraction `noise_density` (15%) of the tokens, in spans of mean length 3, is dropped
from the input; each dropped span is replaced by one sentinel, and the target lists the
sentinels each followed by the span it stands for, then EOS:

    tokens:  Thank you for inviting me to your party last week .
    inputs:  Thank you <X> me to your party <Y> week . </s>
    targets: <X> for inviting <Y> last </s>

Sentinels are counted down from the end of the vocabulary (T5's `<extra_id_0>` is
`vocabulary_size - 1`, `<extra_id_1>` is `vocabulary_size - 2`, ...). As in the reference
(`t5.data.preprocessors.random_spans_noise_mask`), the numbers of noise tokens and spans
depend only on the length: num_noise = round(length * density), num_spans =
round(num_noise / mean_span_length), and spans alternate non-noise / noise starting with
non-noise, every such layout equally likely. So every window of `tokens_length` tokens
corrupts to inputs and targets of fixed lengths, and `span_corruption_lengths` (the
reference's `random_spans_helper`) finds the raw window that fills a given input length.
For the paper's inputs of 512 tokens: windows of 568 raw tokens -> 85 noise tokens in 28
spans -> inputs 483 + 28 sentinels + EOS = 512, targets 85 + 28 + EOS = 114.
"""

import numpy as np

from keras_bigmodels.objectives.text_to_text import teacher_forcing_batch
from keras_bigmodels.utils import check_positive_int


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_density(noise_density, mean_noise_span_length):
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"`noise_density` must be in (0, 1); received {noise_density}.")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(
            f"`mean_noise_span_length` must be >= 1; received {mean_noise_span_length}.")


def _noise_counts(length, noise_density, mean_noise_span_length):
    """(noise tokens, noise spans) of a `length`-token window, as the reference rounds them."""
    # Python's round() and numpy's round half to even like tf.round in the reference.
    num_noise = int(np.round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)  # at least one token of each kind
    num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)
    if num_spans > length - num_noise:
        raise ValueError(
            f"{num_spans} noise spans need as many non-noise tokens between them, but a "
            f"window of {length} tokens keeps only {length - num_noise}: lower "
            "`noise_density` or raise `mean_noise_span_length`.")
    return num_noise, num_spans


def span_corruption_lengths(inputs_length, noise_density=0.15, mean_noise_span_length=3.0):
    """Raw window length and target length that make corrupted inputs `inputs_length` long.

    The reference's `random_spans_helper` with one sentinel per span on both sides and an
    EOS on each: the longest raw window whose inputs (non-noise tokens + one sentinel per
    span + EOS) fit in `inputs_length`.

    Args:
        inputs_length: length of the encoder inputs after corruption (EOS included).
        noise_density: fraction of tokens dropped (T5: 0.15).
        mean_noise_span_length: mean length of a dropped span (T5: 3).

    Returns:
        (tokens_length, targets_length).

    Example:
    >>> span_corruption_lengths(512)
    (568, 114)
    """
    check_positive_int("inputs_length", inputs_length)
    _check_density(noise_density, mean_noise_span_length)
    if inputs_length < 3:
        raise ValueError(f"`inputs_length` must be at least 3; received {inputs_length}.")

    def corrupted_lengths(tokens_length):
        # Unlike `_noise_counts`, no clamping: the reference helper does not clamp either.
        num_noise = int(np.round(tokens_length * noise_density))
        num_spans = int(np.round(num_noise / mean_noise_span_length))
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = corrupted_lengths(tokens_length)
    # The reference's "minor hack": at density 0.5, keep targets no longer than inputs.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def _random_segmentation(num_items, num_segments, rng):
    """Lengths of `num_segments` non-empty segments partitioning `num_items`, uniformly."""
    first_in_segment = np.zeros(num_items, bool)
    # Choosing segment starts uniformly among positions 1.. makes every composition equally likely.
    first_in_segment[1 + rng.permutation(num_items - 1)[:num_segments - 1]] = True
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(length, noise_density=0.15, mean_noise_span_length=3.0, rng=None):
    """A [length] boolean mask of noise spans, as `t5.data.preprocessors.random_spans_noise_mask`.

    Args:
        length: number of tokens (at least 2).
        noise_density: fraction of noise tokens, rounded as in the reference.
        mean_noise_span_length: mean span length; the number of spans is
            round(num_noise / mean_noise_span_length).
        rng: a numpy Generator or a seed.

    Example:
    >>> int(random_spans_noise_mask(100, rng=0).sum())
    15
    """
    _check_density(noise_density, mean_noise_span_length)
    if length < 2:
        raise ValueError(f"`length` must be at least 2; received {length}.")
    rng = _rng(rng)
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    # Spans alternate non-noise, noise, non-noise, ...: noise runs from the end of each
    # non-noise span for that span's noise length.
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.repeat(np.tile([False, True], num_spans), interleaved)
    return is_noise


def _spans_to_sentinels(tokens, mask, vocabulary_size):
    """Tokens with each run of masked tokens replaced by one sentinel (vocab-1, vocab-2, ...)."""
    previous = np.concatenate([[False], mask[:-1]])
    first = mask & ~previous
    sentinels = vocabulary_size - np.cumsum(first)
    out = np.where(first, sentinels, tokens)
    return out[~(mask & previous)]


def corrupt_spans(tokens, noise_mask, vocabulary_size, eos_token_id):
    """Inputs and targets of one window of tokens, given its noise mask.

    Args:
        tokens: [length] token ids.
        noise_mask: [length] booleans, True for dropped tokens.
        vocabulary_size: sentinels are vocabulary_size - 1, - 2, ... (one per span).
        eos_token_id: appended to inputs and targets.

    Returns:
        (inputs, targets), 1-D int32 arrays.

    Example:
    >>> tokens = np.array([10, 11, 12, 13, 14, 15])
    >>> mask = np.array([0, 1, 1, 0, 0, 1], bool)
    >>> [a.tolist() for a in corrupt_spans(tokens, mask, vocabulary_size=100, eos_token_id=1)]
    [[10, 99, 13, 14, 98, 1], [99, 11, 12, 98, 15, 1]]
    """
    tokens = np.asarray(tokens)
    noise_mask = np.asarray(noise_mask, bool)
    if tokens.shape != noise_mask.shape or tokens.ndim != 1:
        raise ValueError(f"`tokens` and `noise_mask` must be 1-D of one length; received "
                         f"shapes {tokens.shape} and {noise_mask.shape}.")
    num_spans = int(np.sum(noise_mask & ~np.concatenate([[False], noise_mask[:-1]])))
    if num_spans and np.max(tokens) >= vocabulary_size - num_spans:
        raise ValueError(
            f"`tokens` hold id {int(np.max(tokens))}, which collides with the {num_spans} "
            f"sentinels counted down from `vocabulary_size` - 1 = {vocabulary_size - 1}; "
            "reserve the top ids of the vocabulary for sentinels.")
    eos = [eos_token_id]
    inputs = np.concatenate([_spans_to_sentinels(tokens, noise_mask, vocabulary_size), eos])
    targets = np.concatenate([_spans_to_sentinels(tokens, ~noise_mask, vocabulary_size), eos])
    return inputs.astype("int32"), targets.astype("int32")


def reconstruct(inputs, targets, vocabulary_size, eos_token_id, pad_token_id=0):
    """The original tokens from corrupted `inputs` and `targets` (the inverse of corrupt_spans).

    Example:
    >>> reconstruct([10, 99, 13, 14, 98, 1], [99, 11, 12, 98, 15, 1], 100, 1).tolist()
    [10, 11, 12, 13, 14, 15]
    """
    def strip(ids):
        ids = [int(t) for t in ids if int(t) != pad_token_id]
        return ids[:-1] if ids and ids[-1] == eos_token_id else ids

    inputs, targets = strip(inputs), strip(targets)
    # Sentinels come in order vocabulary_size - 1, - 2, ... in both sequences, and corrupt_spans
    # keeps ordinary ids below the last sentinel, so the next expected id tells them apart.
    spans, current, expected = {}, None, vocabulary_size - 1
    for token in targets:
        if token == expected:
            current, expected = spans.setdefault(token, []), expected - 1
        elif current is not None:
            current.append(token)
    out, expected = [], vocabulary_size - 1
    for token in inputs:
        if token == expected and token in spans:
            out.extend(spans[token])
            expected -= 1
        else:
            out.append(token)
    return np.asarray(out, "int32")


def span_corruption(token_ids, vocabulary_size, eos_token_id, noise_density=0.15,
                    mean_noise_span_length=3.0, rng=None):
    """Corrupt a batch of equal-length windows; inputs and targets have fixed lengths.

    Args:
        token_ids: [batch, tokens_length] windows of raw tokens (no padding).
        vocabulary_size: sentinels are the top ids of the vocabulary.
        eos_token_id: appended to inputs and targets (T5: 1).
        noise_density, mean_noise_span_length: as in the paper (0.15, 3).
        rng: a numpy Generator or a seed.

    Returns:
        dict of `inputs` [batch, inputs_length] and `targets` [batch, targets_length] int32.

    Example:
    >>> windows = np.random.default_rng(0).integers(2, 1000, size=(4, 568))
    >>> out = span_corruption(windows, vocabulary_size=32100, eos_token_id=1, rng=0)
    >>> out["inputs"].shape, out["targets"].shape
    ((4, 512), (4, 114))
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2:
        raise ValueError(
            f"`token_ids` must be [batch, tokens_length]; received shape {token_ids.shape}.")
    rng = _rng(rng)
    inputs, targets = [], []
    for row in token_ids:
        mask = random_spans_noise_mask(len(row), noise_density, mean_noise_span_length, rng)
        row_inputs, row_targets = corrupt_spans(row, mask, vocabulary_size, eos_token_id)
        inputs.append(row_inputs)
        targets.append(row_targets)
    # Lengths depend only on tokens_length, so every row has the same shape.
    return {"inputs": np.stack(inputs), "targets": np.stack(targets)}


def pack_windows(documents, tokens_length):
    """Documents concatenated into one stream and cut into [num_windows, tokens_length].

    As T5's `reduce_concat_tokens` + `split_tokens`: documents are joined without a
    separator (the corrupted example gets its EOS), and the partial last window is dropped.

    Example:
    >>> pack_windows([[5, 6, 7], [8, 9]], 2).tolist()
    [[5, 6], [7, 8]]
    """
    check_positive_int("tokens_length", tokens_length)
    stream = np.asarray([int(t) for document in documents for t in document], "int32")
    count = len(stream) // tokens_length
    if count == 0:
        raise ValueError(f"The documents hold {len(stream)} tokens, fewer than one window of "
                         f"`tokens_length` = {tokens_length}: use more text or a shorter length.")
    return stream[:count * tokens_length].reshape(count, tokens_length)


class SpanCorruption:
    """Fresh span corruption every epoch over packed windows, as seq2seq training batches.

    Args:
        documents: token-id lists, packed into windows of the raw length that corrupts
            to `inputs_length` (`span_corruption_lengths`).
        inputs_length: encoder length after corruption (T5: 512).
        vocabulary_size, eos_token_id: sentinels and the EOS id (T5: 32100, 1).
        decoder_start_token_id, pad_token_id: T5 starts decoding with the pad id 0.
        noise_density, mean_noise_span_length: the paper's 0.15 and 3.
        seed: noise depends on (seed, epoch, indices).

    Example:
    >>> data = SpanCorruption(documents, inputs_length=64, vocabulary_size=1000,
    ...                       eos_token_id=1)
    >>> x, y, sample_weight = data.batch(np.arange(8), epoch=0)
    """

    def __init__(self, documents, inputs_length, vocabulary_size, eos_token_id,
                 decoder_start_token_id=0, pad_token_id=0, noise_density=0.15,
                 mean_noise_span_length=3.0, seed=0):
        self.tokens_length, self.targets_length = span_corruption_lengths(
            inputs_length, noise_density, mean_noise_span_length)
        self.windows = pack_windows(documents, self.tokens_length)
        self.inputs_length = inputs_length
        self.vocabulary_size = vocabulary_size
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.pad_token_id = pad_token_id
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.seed = seed

    def __len__(self):
        return len(self.windows)

    def batch(self, indices, epoch=0):
        """(x, y, sample_weight) of the windows at `indices`, corrupted for this epoch."""
        indices = np.asarray(indices)
        rng = np.random.default_rng([self.seed, epoch, int(indices[0]), len(indices)])
        out = span_corruption(self.windows[indices], self.vocabulary_size, self.eos_token_id,
                              self.noise_density, self.mean_noise_span_length, rng=rng)
        return teacher_forcing_batch(
            out["inputs"], out["targets"], self.decoder_start_token_id, self.pad_token_id,
            inputs_length=self.inputs_length, targets_length=self.targets_length)
