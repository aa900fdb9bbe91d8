import math

import keras
import numpy as np
import pytest

from keras_bigmodels.objectives import denoising, span_corruption, text_to_text
from keras_bigmodels.objectives.denoising import (BartDenoising, bart_noise, delete_tokens,
                                                  permute_sentences, rotate_document,
                                                  text_infilling)
from keras_bigmodels.objectives.span_corruption import (SpanCorruption, corrupt_spans,
                                                        random_spans_noise_mask, reconstruct,
                                                        span_corruption_lengths)

VOCAB, EOS = 32100, 1
BOS, PAD, BART_EOS, MASK, STOP = 0, 1, 2, 3, 4


def _reference_helper_lengths(tokens_length, density=0.15, mean=3.0):
    """Inputs/targets lengths of a raw window, spelled out from the T5 paper's arithmetic."""
    noise = round(tokens_length * density)
    spans = round(noise / mean)
    return tokens_length - noise + spans + 1, noise + spans + 1


# ---- T5 span corruption -------------------------------------------------------------

def test_lengths_for_512_inputs_match_the_reference():
    # 568 raw tokens: 85 noise tokens in 28 spans -> 483 + 28 + EOS = 512 and 85 + 28 + 1 = 114.
    assert span_corruption_lengths(512) == (568, 114)
    assert _reference_helper_lengths(568) == (512, 114)
    assert _reference_helper_lengths(569)[0] > 512  # the window is the longest that fits


@pytest.mark.parametrize("inputs_length", [16, 64, 100, 128, 512])
def test_corrupted_windows_come_out_at_the_helper_lengths(inputs_length):
    tokens_length, targets_length = span_corruption_lengths(inputs_length)
    windows = np.random.default_rng(0).integers(2, 1000, size=(3, tokens_length))
    out = span_corruption.span_corruption(windows, VOCAB, EOS, rng=0)
    assert out["inputs"].shape == (3, _reference_helper_lengths(tokens_length)[0])
    assert out["inputs"].shape[1] <= inputs_length
    assert out["targets"].shape == (3, targets_length)


def test_noise_mask_counts_spans_and_starts_with_nonnoise():
    rng = np.random.default_rng(0)
    span_lengths = []
    for _ in range(200):
        mask = random_spans_noise_mask(568, rng=rng)
        assert mask.sum() == 85 and not mask[0]
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        ends = np.flatnonzero(mask & ~np.concatenate([mask[1:], [False]]))
        assert len(starts) == 28
        span_lengths.extend(ends - starts + 1)
    assert abs(np.mean(span_lengths) - 85 / 28) < 1e-9
    # The reference's layout alternates non-noise, noise, ... ending with noise: the last
    # token is always noise (T5 without `random_roll`).
    assert all(random_spans_noise_mask(50, rng=rng)[-1] for _ in range(20))


def test_sentinels_count_down_from_the_vocabulary_end():
    tokens = np.arange(10, 30)
    mask = np.zeros(20, bool)
    mask[[3, 4, 10, 15, 16, 17]] = True
    inputs, targets = corrupt_spans(tokens, mask, vocabulary_size=100, eos_token_id=EOS)
    assert inputs.tolist() == [10, 11, 12, 99, 15, 16, 17, 18, 19, 98, 21, 22, 23, 24, 97,
                               28, 29, EOS]
    # The trailing kept run gets a sentinel of its own in the targets, as in the reference.
    assert targets.tolist() == [99, 13, 14, 98, 20, 97, 25, 26, 27, 96, EOS]


def test_inputs_and_targets_recover_the_original():
    tokens_length, _ = span_corruption_lengths(128)
    windows = np.random.default_rng(1).integers(2, VOCAB - 200, size=(50, tokens_length))
    out = span_corruption.span_corruption(windows, VOCAB, EOS, rng=3)
    for inputs, targets, original in zip(out["inputs"], out["targets"], windows):
        np.testing.assert_array_equal(reconstruct(inputs, targets, VOCAB, EOS), original)


def test_span_corruption_is_seeded_and_fresh_every_epoch():
    documents = [list(np.random.default_rng(i).integers(2, 1000, size=300)) for i in range(4)]
    data = SpanCorruption(documents, inputs_length=64, vocabulary_size=VOCAB, eos_token_id=EOS)
    indices = np.arange(8)
    first, again = data.batch(indices, epoch=0), data.batch(indices, epoch=0)
    second = data.batch(indices, epoch=1)
    np.testing.assert_array_equal(first[0]["encoder_token_ids"], again[0]["encoder_token_ids"])
    assert not np.array_equal(first[0]["encoder_token_ids"], second[0]["encoder_token_ids"])
    other_seed = SpanCorruption(documents, 64, VOCAB, EOS, seed=1).batch(indices, epoch=0)
    assert not np.array_equal(first[1], other_seed[1])
    x, y, weight = first
    assert x["encoder_token_ids"].shape == (8, 64) and y.shape == (8, data.targets_length)
    # Teacher forcing: the decoder reads the targets shifted right behind T5's start id 0.
    np.testing.assert_array_equal(x["decoder_token_ids"][:, 0], 0)
    np.testing.assert_array_equal(x["decoder_token_ids"][:, 1:], y[:, :-1])
    assert weight.all() and x["encoder_padding_mask"].all()


def test_span_corruption_errors():
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption_lengths(512, noise_density=1.5)
    with pytest.raises(ValueError, match="sentinels"):
        corrupt_spans(np.array([5, 99, 7]), np.array([0, 1, 0], bool), 100, EOS)
    with pytest.raises(ValueError, match="token_ids"):
        span_corruption.span_corruption(np.arange(10), VOCAB, EOS)
    with pytest.raises(ValueError, match="tokens_length"):
        span_corruption.pack_windows([[1, 2]], 568)


# ---- BART noise ---------------------------------------------------------------------

def _document(length=200, offset=10):
    return np.concatenate([[BOS], np.arange(offset, offset + length), [BART_EOS]])


def _gaps(source, original):
    """For a source whose kept tokens are unique ids of `original` in order: the missing
    runs of original tokens and the number of masks at each gap."""
    kept = [t for t in source if t != MASK]
    index = {int(t): i for i, t in enumerate(original)}
    kept_positions = [index[int(t)] for t in kept]
    assert kept_positions == sorted(kept_positions), "kept tokens changed order"
    runs, masks_at_runs = [], []
    masks_between, previous = 0, None
    for token in source:
        if token == MASK:
            masks_between += 1
            continue
        position = index[int(token)]
        if previous is not None and position - previous > 1:
            runs.append(position - previous - 1)
            masks_at_runs.append(masks_between)
        previous, masks_between = position, 0
    return runs, masks_at_runs, kept


def test_text_infilling_masks_30_percent_in_poisson_spans_one_mask_each():
    rng = np.random.default_rng(0)
    original = _document(500)
    covered, runs_all = [], []
    for _ in range(40):
        source = text_infilling(original, MASK, mask_ratio=0.3, poisson_lambda=3.0, rng=rng)
        assert source[0] == BOS and source[-1] == BART_EOS
        runs, masks, kept = _gaps(source, original)
        # Each dropped span left a mask behind; a span is one mask, never one per token.
        assert all(m >= 1 for m in masks)
        assert np.sum(source == MASK) < sum(runs)
        covered.append(sum(runs) / 500)
        runs_all.extend(runs)
    # Budget ceil(0.3 * 500) = 150 tokens; spans that overlap merge (as in fairseq), so
    # about 27% end up covered.
    assert 0.25 < np.mean(covered) <= 0.3
    # Runs are Poisson(3) spans without the zero lengths (mean 3 / (1 - e^-3) = 3.16),
    # lengthened where spans touch or overlap.
    assert 3.0 < np.mean(runs_all) < 4.5


def test_zero_length_spans_insert_a_mask():
    original = _document(100)
    inserted = denoising.insert_masks(original, 5, MASK, rng=0)
    np.testing.assert_array_equal(inserted[inserted != MASK], original)
    assert np.sum(inserted == MASK) == 5 and inserted[0] == BOS and inserted[-1] == BART_EOS
    # With lambda = 3, about 5% of spans are zero-length: some gaps hold a mask but no loss.
    inserted = 0
    for seed in range(20):
        source = text_infilling(original, MASK, rng=seed)
        kept = source != MASK
        inserted += int(np.sum(~kept)) - len(_gaps(source, original)[0])
    assert inserted > 0


def test_sentence_permutation_shuffles_whole_sentences():
    sentences = [[10, 11, STOP], [12, STOP], [13, 14, 15, STOP], [16, 17, STOP], [18, STOP]]
    original = np.array([BOS, *sum(sentences, []), BART_EOS])
    seen_orders = set()
    for seed in range(20):
        source = permute_sentences(original, full_stop_ids=[STOP], rng=seed)
        assert source[0] == BOS and source[-1] == BART_EOS and len(source) == len(original)
        parts = np.split(source[1:-1], np.flatnonzero(source[1:-1] == STOP)[:-1] + 1)
        assert sorted(map(tuple, parts)) == sorted(map(tuple, sentences))
        seen_orders.add(tuple(map(tuple, parts)))
    assert len(seen_orders) > 5


def test_token_deletion_and_document_rotation():
    original = _document(50)
    deleted = delete_tokens(original, 0.2, rng=0)
    assert len(deleted) == len(original) - 10
    _gaps(deleted, original)  # order kept
    rotated = rotate_document(original, rng=3)
    inner = original[1:-1]
    start = int(np.flatnonzero(inner == rotated[1])[0])
    np.testing.assert_array_equal(rotated[1:-1], np.roll(inner, -start))
    assert rotated[0] == BOS and rotated[-1] == BART_EOS and start > 0


def test_bart_noise_options_and_errors():
    original = _document(60)
    plain = bart_noise(original, MASK, mask_ratio=0.0, permute_sentence_ratio=0.0, rng=0)
    np.testing.assert_array_equal(plain, original)
    rotated = bart_noise(original, MASK, mask_ratio=0.0, rotate_ratio=1.0, rng=0)
    assert sorted(rotated.tolist()) == sorted(original.tolist())
    assert not np.array_equal(rotated, original)
    randomized = text_infilling(original, 999, random_ratio=1.0, vocabulary_size=50, rng=0)
    assert not np.any(randomized == 999) and len(randomized) < len(original)
    with pytest.raises(ValueError, match="vocabulary_size"):
        text_infilling(original, MASK, random_ratio=1.0, rng=0)
    with pytest.raises(ValueError, match="mask_ratio"):
        text_infilling(original, MASK, mask_ratio=1.5)
    with pytest.raises(ValueError, match="document"):
        text_infilling([0, 2], MASK)
    with pytest.raises(ValueError, match="poisson_lambda"):
        denoising.poisson_span_probabilities(0.0)


def test_bart_denoising_batches_are_seeded_fresh_per_epoch_and_keep_targets():
    rng = np.random.default_rng(0)
    ids = iter(rng.permutation(np.arange(10, 5000)))  # unique ids: alignment is unambiguous
    documents = [[next(ids) for _ in range(int(n))] for n in rng.integers(20, 90, 12)]
    data = BartDenoising(documents, max_length=48, mask_token_id=MASK, full_stop_ids=[STOP])
    indices = np.arange(6)
    x, y, weight = data.batch(indices, epoch=0)
    x_again, _, _ = data.batch(indices, epoch=0)
    x_next, y_next, _ = data.batch(indices, epoch=1)
    np.testing.assert_array_equal(x["encoder_token_ids"], x_again["encoder_token_ids"])
    assert not np.array_equal(x["encoder_token_ids"], x_next["encoder_token_ids"])
    np.testing.assert_array_equal(y, y_next)  # the target is the clean document
    for row, i in enumerate(indices):
        example = data.examples[i]
        np.testing.assert_array_equal(y[row, :len(example)], example)
        assert np.all(y[row, len(example):] == PAD) and weight[row].sum() == len(example)
        # Reconstruction: the kept input tokens are the document's, in its order.
        source = x["encoder_token_ids"][row][x["encoder_padding_mask"][row]]
        _gaps(source, example)
    # BART's decoder reads </s> <s> ... (targets shifted right behind start id 2).
    np.testing.assert_array_equal(x["decoder_token_ids"][:, :2], [[BART_EOS, BOS]] * 6)
    # Noise does not depend on which batch an example is drawn in.
    alone, _, _ = data.batch([3], epoch=0)
    np.testing.assert_array_equal(alone["encoder_token_ids"][0], x["encoder_token_ids"][3])


def test_objectives_feed_a_py_dataset():
    documents = [list(np.random.default_rng(i).integers(10, 400, size=120)) for i in range(4)]
    data = BartDenoising(documents, max_length=32, mask_token_id=MASK)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return len(data) // 4

        def __getitem__(self, index):
            return data.batch(np.arange(index * 4, index * 4 + 4), self.epoch)

        def on_epoch_end(self):
            self.epoch += 1

    batches = Batches()
    first = batches[0][0]["encoder_token_ids"]
    batches.on_epoch_end()
    assert first.shape == (4, 32)
    assert not np.array_equal(first, batches[0][0]["encoder_token_ids"])


# ---- text to text -------------------------------------------------------------------

def test_text_to_text_prefixes_and_batches():
    assert text_to_text.add_task_prefix(["a cat"], "summarize") == ["summarize: a cat"]
    assert text_to_text.add_task_prefix(["Hi"], "translate_en_de") == [
        "translate English to German: Hi"]
    words = {}

    def encode(text):
        return [words.setdefault(w, len(words) + 10) for w in text.split()]

    x, y, weight = text_to_text.text_to_text_batch(
        ["the cat sat on the mat", "dogs"], ["cat", "dogs bark loudly"], encode,
        eos_token_id=EOS, decoder_start_token_id=0, prefix="summarize",
        max_inputs_length=6, max_targets_length=5)
    prefix_id = words["summarize:"]
    assert x["encoder_token_ids"][0].tolist() == [prefix_id, words["the"], words["cat"],
                                                  words["sat"], words["on"], EOS]  # truncated
    assert x["encoder_padding_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert y[1].tolist() == [words["dogs"], words["bark"], words["loudly"], EOS, 0]
    assert x["decoder_token_ids"][1].tolist() == [0, words["dogs"], words["bark"],
                                                  words["loudly"], 0]
    assert weight.sum(1).tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="prefix"):
        text_to_text.add_task_prefix(["x"], "")
    with pytest.raises(ValueError, match="inputs"):
        text_to_text.text_to_text_batch("one string", ["x"], encode, EOS, 0)
    with pytest.raises(ValueError, match="at least one token"):
        text_to_text.teacher_forcing_batch([[]], [[1]], 0)


def test_noise_density_of_span_corruption_on_short_windows():
    # The count rounds as the reference: round(n * 0.15), at least one noise token.
    for length in (2, 7, 20, 33):
        mask = random_spans_noise_mask(length, rng=0)
        assert mask.sum() == min(max(round(length * 0.15), 1), length - 1)
    assert math.isclose(np.mean([random_spans_noise_mask(1000, rng=s).mean()
                                 for s in range(5)]), 0.15)
