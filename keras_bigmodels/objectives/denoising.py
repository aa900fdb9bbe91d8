"""BART's denoising noise (Lewis et al. 2020, Sec. 2.2), pure numpy, after fairseq.

The encoder reads a corrupted document and the decoder reconstructs the original. The
transforms follow fairseq's `DenoisingDataset` (the reference implementation) and act on
one document `<s> ... </s>` whose first and last tokens never move or get masked:

- text infilling (`--mask 0.3 --mask-length span-poisson --replace-length 1`): span
  lengths are drawn from Poisson(lambda=3) until they cover 30% of the tokens; each span
  becomes ONE mask token; a zero-length span inserts a mask token.
- sentence permutation (`--permute-sentences 1`): sentences, ended by full-stop tokens,
  are shuffled.
- token deletion (fairseq's `--mask-length subword --replace-length 0`): random tokens are
  removed, so the model must find where input is missing.
- document rotation (`--rotate`): the document is rotated to start at a random token.

fairseq applies them in the order permutation, masking, insertion, rotation; `bart_noise`
does the same (deletion, an alternative to infilling in the paper, comes after masking).
Every random draw comes from one numpy Generator; `BartDenoising` seeds it per
(seed, epoch, example) as fairseq's `numpy_seed(seed, epoch, index)`, so noise is fresh
every epoch and independent of batching.
"""

import math

import numpy as np

from keras_bigmodels.objectives.text_to_text import teacher_forcing_batch
from keras_bigmodels.utils import check_positive_int


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_ratio(name, value, upper=1.0):
    if not 0.0 <= value <= upper:
        raise ValueError(f"`{name}` must be in [0, {upper}]; received {value}.")


def _check_document(tokens):
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < 3:
        raise ValueError("A document must be a 1-D sequence <s> ... </s> of at least 3 ids; "
                         f"received shape {tokens.shape}.")
    return tokens.astype("int64")


def _random_ids(count, vocabulary_size, rng):
    if vocabulary_size is None:
        raise ValueError("`vocabulary_size` is needed when `random_ratio` > 0 (random "
                         "replacement tokens are drawn from it).")
    # fairseq draws from [1, len(vocab)): never id 0 (<s> in BART's dictionary).
    return rng.integers(1, vocabulary_size, size=count)


def poisson_span_probabilities(poisson_lambda=3.0):
    """P(span length = k) of fairseq's truncated Poisson table (k = 0, 1, ...).

    fairseq stops the table at the first k whose probability is below 1e-7 (or at 128).

    Example:
    >>> p = poisson_span_probabilities(3.0)
    >>> round(float(p[3]), 4)
    0.224
    """
    if not poisson_lambda > 0:
        raise ValueError(f"`poisson_lambda` must be > 0; received {poisson_lambda}.")
    probabilities, power, factorial = [], 1.0, 1.0
    for k in range(128):
        probabilities.append(math.exp(-poisson_lambda) * power / factorial)
        power *= poisson_lambda
        factorial *= k + 1
        if probabilities[-1] < 1e-7:
            break
    probabilities = np.asarray(probabilities)
    # torch's Categorical normalizes the table; so does this.
    return probabilities / probabilities.sum()


def insert_masks(tokens, count, mask_token_id, random_ratio=0.0, vocabulary_size=None,
                 rng=None):
    """`count` mask tokens inserted at random inner positions (fairseq's insertion noise).

    Of the inserted tokens, ceil(count * random_ratio) are random ids instead of masks.

    Example:
    >>> insert_masks([0, 10, 11, 2], 1, mask_token_id=3, rng=0).shape
    (5,)
    """
    tokens = np.asarray(tokens)
    if count <= 0:
        return tokens
    rng = _rng(rng)
    total = len(tokens) + count
    positions = rng.permutation(total - 2)[:count] + 1  # never before <s> or after </s>
    result = np.full(total, -1, dtype=tokens.dtype)
    num_random = int(math.ceil(count * random_ratio))
    result[positions[num_random:]] = mask_token_id
    if num_random:
        result[positions[:num_random]] = _random_ids(num_random, vocabulary_size, rng)
    inserted = np.zeros(total, bool)
    inserted[positions] = True
    result[~inserted] = tokens
    return result


def text_infilling(tokens, mask_token_id, mask_ratio=0.3, poisson_lambda=3.0, random_ratio=0.0,
                   vocabulary_size=None, word_starts=None, rng=None):
    """Spans of Poisson(lambda) length, covering `mask_ratio` of the words, each -> one mask.

    fairseq's `add_whole_word_mask` with span-poisson lengths and replace_length 1: the
    budget is ceil(words * mask_ratio); lengths are drawn until they reach it and the last
    is cut to fit; spans start at distinct random word starts and run over whole words;
    zero-length spans become inserted masks. Spans may overlap and then merge, so about
    27% of a long document ends up covered for a 30% budget (as in fairseq).

    Args:
        tokens: one document <s> ... </s> (1-D ids).
        mask_token_id: the <mask> id (BART: 50264).
        mask_ratio: fraction of words masked (BART large: 0.3).
        poisson_lambda: mean span length (the paper: 3).
        random_ratio: fraction of masks that are random tokens instead (fairseq's
            --mask-random; BART's paper setup: 0).
        vocabulary_size: range of random tokens (needed when random_ratio > 0).
        word_starts: optional 1-D booleans, True where a token starts a word (whole-word
            masking over subwords); default: every token is a word.
        rng: a numpy Generator or a seed.

    Example:
    >>> text_infilling([0, *range(10, 30), 2], mask_token_id=3, rng=0).tolist()[:3]
    [0, 10, 11]
    """
    _check_ratio("mask_ratio", mask_ratio)
    _check_ratio("random_ratio", random_ratio)
    tokens = _check_document(tokens).copy()
    rng = _rng(rng)
    if word_starts is None:
        is_word_start = np.ones(len(tokens), "int64")
    else:
        is_word_start = np.asarray(word_starts).astype("int64").copy()
        if is_word_start.shape != tokens.shape:
            raise ValueError(f"`word_starts` must have the shape of `tokens` {tokens.shape}; "
                             f"received {is_word_start.shape}.")
    is_word_start[0] = is_word_start[-1] = 0
    num_to_mask = int(math.ceil(is_word_start.sum() * mask_ratio))
    if num_to_mask == 0:
        return tokens

    probabilities = poisson_span_probabilities(poisson_lambda)
    lengths = rng.choice(len(probabilities), size=num_to_mask, p=probabilities)
    while lengths.sum() < num_to_mask:
        lengths = np.concatenate(
            [lengths, rng.choice(len(probabilities), size=num_to_mask, p=probabilities)])
    cumulative = np.cumsum(lengths)
    last = int(np.searchsorted(cumulative, num_to_mask))  # first span reaching the budget
    lengths[last] = num_to_mask - (cumulative[last - 1] if last else 0)
    lengths = lengths[:last + 1]
    num_inserts = int(np.sum(lengths == 0))
    lengths = lengths[lengths > 0]
    if not len(lengths):
        return insert_masks(tokens, num_inserts, mask_token_id, random_ratio,
                            vocabulary_size, rng)

    candidates = np.flatnonzero(is_word_start)
    indices = candidates[rng.permutation(len(candidates))[:len(lengths)]]
    lengths = lengths[:len(indices)]  # fewer word starts than spans: fairseq truncates too
    mask_random = rng.random(len(indices)) < random_ratio
    tokens[indices] = mask_token_id
    if mask_random.any():
        tokens[indices[mask_random]] = _random_ids(int(mask_random.sum()), vocabulary_size, rng)
    # A huge "word start" at </s> ends every span before the end of the document.
    is_word_start[-1] = 255
    keep = np.ones(len(tokens), bool)
    lengths = lengths - 1
    while len(indices):
        lengths = lengths - is_word_start[indices + 1]
        running = lengths >= 0
        indices, lengths = indices[running] + 1, lengths[running]
        keep[indices] = False  # the rest of a span collapses into its one mask token
    tokens = tokens[keep]
    return insert_masks(tokens, num_inserts, mask_token_id, random_ratio, vocabulary_size, rng)


def permute_sentences(tokens, full_stop_ids, permute_ratio=1.0, rng=None):
    """Shuffle the sentences of a document (a sentence ends with a full-stop token).

    fairseq's `permute_sentences`: the token before </s> always ends a sentence; a
    fraction `permute_ratio` of the sentences is permuted among themselves.

    Args:
        tokens: one document <s> ... </s>.
        full_stop_ids: ids that end sentences (BART's GPT-2 BPE: "." is 4 in HF's vocab).
        permute_ratio: fraction of sentences permuted (BART: 1.0, all of them).
        rng: a numpy Generator or a seed.

    Example:
    >>> permute_sentences([0, 10, 4, 11, 12, 4, 2], full_stop_ids=[4], rng=2).tolist()
    [0, 11, 12, 4, 10, 4, 2]
    """
    _check_ratio("permute_ratio", permute_ratio)
    tokens = _check_document(tokens)
    rng = _rng(rng)
    full_stops = np.isin(tokens, np.asarray(list(full_stop_ids), "int64"))
    full_stops[-2] = True
    # A sentence ends after the first of a run of full stops ("..." stays with the next).
    sentence_ends = np.flatnonzero(full_stops[1:] & ~full_stops[:-1]) + 2
    num_sentences = len(sentence_ends)
    num_to_permute = int(math.ceil(num_sentences * 2 * permute_ratio / 2.0))
    substitutions = rng.permutation(num_sentences)[:num_to_permute]
    ordering = np.arange(num_sentences)
    ordering[substitutions] = substitutions[rng.permutation(num_to_permute)]
    result = tokens.copy()
    index = 1
    for i in ordering:
        sentence = tokens[(sentence_ends[i - 1] if i > 0 else 1):sentence_ends[i]]
        result[index:index + len(sentence)] = sentence
        index += len(sentence)
    return result


def delete_tokens(tokens, deletion_ratio, rng=None):
    """Remove ceil(inner tokens * deletion_ratio) random inner tokens (BART's token deletion).

    Example:
    >>> delete_tokens([0, 10, 11, 12, 13, 2], 0.5, rng=0).shape
    (4,)
    """
    _check_ratio("deletion_ratio", deletion_ratio)
    tokens = _check_document(tokens)
    rng = _rng(rng)
    count = int(math.ceil((len(tokens) - 2) * deletion_ratio))
    keep = np.ones(len(tokens), bool)
    keep[1 + rng.permutation(len(tokens) - 2)[:count]] = False
    return tokens[keep]


def rotate_document(tokens, rng=None):
    """Rotate the inner tokens to start at a random one (fairseq's `add_rolling_noise`).

    Example:
    >>> rotate_document([0, 10, 11, 12, 2], rng=0)[[0, -1]].tolist()
    [0, 2]
    """
    tokens = _check_document(tokens)
    rng = _rng(rng)
    offset = int(rng.integers(1, max(1, len(tokens) - 1) + 1))
    return np.concatenate([tokens[:1], tokens[offset:-1], tokens[1:offset], tokens[-1:]])


def bart_noise(tokens, mask_token_id, mask_ratio=0.3, poisson_lambda=3.0,
               permute_sentence_ratio=1.0, full_stop_ids=(), deletion_ratio=0.0,
               rotate_ratio=0.0, insert_ratio=0.0, random_ratio=0.0, vocabulary_size=None,
               word_starts=None, rng=None):
    """One document's encoder input under BART's noise, in fairseq's order.

    Args:
        tokens: one document <s> ... </s> (the decoder's target, unchanged).
        mask_token_id: the <mask> id.
        mask_ratio, poisson_lambda: text infilling (0 turns it off).
        permute_sentence_ratio, full_stop_ids: sentence permutation; without full stops the
            document is one sentence, so nothing moves (fairseq with a non-GPT-2 BPE).
        deletion_ratio: token deletion after infilling (0: off).
        rotate_ratio: probability of rotating the document (0: off).
        insert_ratio: extra inserted masks, as a fraction of the current length.
        random_ratio, vocabulary_size: masks replaced by random ids (fairseq --mask-random).
        word_starts: whole-word masking (see `text_infilling`); not used with permutation,
            which would move the words.
        rng: a numpy Generator or a seed.

    Example:
    >>> source = bart_noise([0, 10, 11, 4, 12, 13, 4, 2], mask_token_id=3, full_stop_ids=[4],
    ...                     rng=0)
    >>> int(source[0]), int(source[-1])
    (0, 2)
    """
    _check_ratio("permute_sentence_ratio", permute_sentence_ratio)
    _check_ratio("rotate_ratio", rotate_ratio)
    _check_ratio("insert_ratio", insert_ratio, upper=math.inf)
    source = _check_document(tokens)
    rng = _rng(rng)
    if permute_sentence_ratio > 0:
        if word_starts is not None:
            raise ValueError("`word_starts` cannot be combined with sentence permutation, "
                             "which moves the words; set permute_sentence_ratio=0.")
        source = permute_sentences(source, full_stop_ids, permute_sentence_ratio, rng)
    if mask_ratio > 0:
        source = text_infilling(source, mask_token_id, mask_ratio, poisson_lambda, random_ratio,
                                vocabulary_size, word_starts, rng)
    if deletion_ratio > 0:
        source = delete_tokens(source, deletion_ratio, rng)
    if insert_ratio > 0:
        source = insert_masks(source, int(math.ceil(len(source) * insert_ratio)), mask_token_id,
                              random_ratio, vocabulary_size, rng)
    if rotate_ratio > 0 and rng.random() < rotate_ratio:
        source = rotate_document(source, rng)
    return source


def split_documents(documents, max_length, bos_token_id=0, eos_token_id=2):
    """Documents (token-id lists) cut into examples <s> ... </s> of at most `max_length`.

    Example:
    >>> [e.tolist() for e in split_documents([[5, 6, 7, 8, 9]], 5)]
    [[0, 5, 6, 7, 2], [0, 8, 9, 2]]
    """
    if max_length < 3:
        raise ValueError(f"`max_length` must be at least 3; received {max_length}.")
    room = max_length - 2
    examples = []
    for document in documents:
        document = [int(t) for t in document]
        for start in range(0, len(document), room):
            examples.append(np.asarray(
                [bos_token_id, *document[start:start + room], eos_token_id], "int64"))
    if not examples:
        raise ValueError("`documents` hold no tokens.")
    return examples


class BartDenoising:
    """BART denoising batches: noisy documents in, the original documents as targets.

    Args:
        documents: token-id lists (without <s>/</s>), cut by `split_documents`.
        max_length: encoder and decoder length (BART: 512 tokens per sample); a noisy
            input that grows past it (inserted masks) is cut, keeping </s>.
        mask_token_id: the <mask> id.
        bos_token_id, eos_token_id, pad_token_id: BART's 0, 2, 1.
        decoder_start_token_id: BART starts decoding with </s> (2).
        seed: noise depends on (seed, epoch, example index), as fairseq's.
        **noise_kwargs: `bart_noise` options (mask_ratio, poisson_lambda,
            permute_sentence_ratio, full_stop_ids, deletion_ratio, rotate_ratio, ...).

    Example:
    >>> data = BartDenoising(documents, max_length=64, mask_token_id=4,
    ...                      full_stop_ids=[5])
    >>> x, y, sample_weight = data.batch(np.arange(8), epoch=0)
    """

    def __init__(self, documents, max_length, mask_token_id, bos_token_id=0, eos_token_id=2,
                 pad_token_id=1, decoder_start_token_id=2, seed=0, **noise_kwargs):
        check_positive_int("max_length", max_length)
        self.examples = split_documents(documents, max_length, bos_token_id, eos_token_id)
        self.max_length = max_length
        self.mask_token_id = mask_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.seed = seed
        self.noise_kwargs = noise_kwargs
        bart_noise(self.examples[0], mask_token_id, rng=0, **noise_kwargs)  # check options now

    def __len__(self):
        return len(self.examples)

    def noisy(self, index, epoch=0):
        """The encoder input of example `index` at `epoch`."""
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        source = bart_noise(self.examples[index], self.mask_token_id, rng=rng,
                            **self.noise_kwargs)
        if len(source) > self.max_length:
            source = np.concatenate([source[:self.max_length - 1], [self.eos_token_id]])
        return source

    def batch(self, indices, epoch=0):
        """(x, y, sample_weight) of the examples at `indices`, noised for this epoch."""
        indices = np.asarray(indices)
        sources = [self.noisy(i, epoch) for i in indices]
        targets = [self.examples[i] for i in indices]
        return teacher_forcing_batch(sources, targets, self.decoder_start_token_id,
                                     self.pad_token_id, self.max_length, self.max_length)
