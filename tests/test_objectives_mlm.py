import numpy as np
import pytest

from keras_bigmodels.objectives.masked_lm import DynamicMasking, mask_tokens
from keras_bigmodels.objectives.sentence_pairs import (full_sentence_packing,
                                                       next_sentence_pairs)

CLS, SEP, PAD, MASK = 2, 3, 0, 4
SPECIAL = (PAD, 1, CLS, SEP)


def _batch(rows=400, length=64, vocabulary_size=1000, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, vocabulary_size, size=(rows, length))
    ids[:, 0], ids[:, 40] = CLS, SEP
    ids[:, 41:] = PAD
    return ids


def test_mask_tokens_follows_bert_80_10_10():
    ids = _batch()
    out = mask_tokens(ids, 1000, MASK, special_token_ids=SPECIAL, rng=0)
    weights = out["mask_weights"]
    # 15% of the 39 real tokens of each row, never a special position.
    assert np.all(weights.sum(1) == round(39 * 0.15))
    rows = np.repeat(np.arange(len(ids))[:, None], weights.shape[1], 1)
    chosen = (rows[weights > 0], out["mask_positions"][weights > 0])
    assert not np.isin(ids[chosen], SPECIAL).any()
    np.testing.assert_array_equal(out["mask_ids"][weights > 0], ids[chosen])
    corrupted = out["token_ids"][chosen]
    as_mask = np.mean(corrupted == MASK)
    unchanged = np.mean(corrupted == ids[chosen])
    random = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.03 and abs(random - 0.1) < 0.03
    # Nothing outside the chosen positions changes.
    other = np.ones_like(ids, bool)
    other[chosen] = False
    np.testing.assert_array_equal(out["token_ids"][other], ids[other])


def test_mask_tokens_errors():
    with pytest.raises(ValueError, match="mask_rate"):
        mask_tokens(_batch(2), 1000, MASK, mask_rate=0.0)
    with pytest.raises(ValueError, match="token_ids"):
        mask_tokens(np.zeros(5, int), 1000, MASK)


def test_dynamic_masking_changes_every_epoch_static_does_not():
    examples = {"token_ids": _batch(8)}
    kwargs = dict(vocabulary_size=1000, mask_token_id=MASK, special_token_ids=SPECIAL)
    dynamic = DynamicMasking(examples, **kwargs)
    a, b = dynamic.batch(np.arange(8), epoch=0), dynamic.batch(np.arange(8), epoch=1)
    assert not np.array_equal(a["mask_positions"], b["mask_positions"])
    np.testing.assert_array_equal(a["mask_positions"],
                                  dynamic.batch(np.arange(8), epoch=0)["mask_positions"])
    static = DynamicMasking(examples, dynamic=False, **kwargs)
    np.testing.assert_array_equal(static.batch(np.arange(8), 0)["mask_positions"],
                                  static.batch(np.arange(8), 1)["mask_positions"])


def _documents(num=30, seed=0):
    rng = np.random.default_rng(seed)
    # Document d's tokens are 100*d + k, so the source of every token is known.
    return [[[100 * d + int(k) for k in rng.integers(10, 99, rng.integers(3, 9))]
             for _ in range(rng.integers(3, 8))] for d in range(num)]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_sentence_pairs_format_and_labels(task):
    documents = _documents()
    out = next_sentence_pairs(documents, 32, CLS, SEP, PAD, task=task, rng=0)
    labels = out["labels"]
    assert 0.3 < labels.mean() < 0.7
    for ids, segments, mask, label in zip(out["token_ids"], out["segment_ids"],
                                          out["padding_mask"], labels):
        real = ids[mask == 1]
        assert real[0] == CLS and real[-1] == SEP and np.sum(real == SEP) == 2
        sep = int(np.flatnonzero(real == SEP)[0])
        np.testing.assert_array_equal(segments[mask == 1],
                                      [0] * (sep + 1) + [1] * (len(real) - sep - 1))
        a, b = real[1:sep], real[sep + 1:-1]
        doc_a, doc_b = set(a // 100), set(b // 100)
        assert len(doc_a) == 1 and len(doc_b) == 1
        if task == "nsp":
            assert (doc_a != doc_b) == bool(label)
        else:
            assert doc_a == doc_b
            # Within a document, ids come from sentences in order: check via positions.
            doc = documents[doc_a.pop()]
            flat = [t for s in doc for t in s]
            where = lambda seg: min(i for i in range(len(flat)) if flat[i:i + 1] == [seg[0]])
            if len(set(flat)) == len(flat):
                assert (where(a) > where(b)) == bool(label)
    assert out["token_ids"].shape[1] == 32 and out["padding_mask"].sum(1).max() <= 32


def test_full_sentence_packing_crosses_documents():
    documents = _documents(10)
    out = full_sentence_packing(documents, 40, 0, 2, pad_token_id=1)
    flat = [t for d in documents for s in d for t in s]
    recovered = [t for ids, m in zip(out["token_ids"], out["padding_mask"])
                 for t in ids[m == 1][1:-1] if t != 2]
    assert recovered == flat  # every token, in order, none lost
    assert np.all(out["token_ids"][:, 0] == 0) and np.all(out["segment_ids"] == 0)
    assert out["padding_mask"].sum(1).mean() > 30  # packed, not one sentence per row
