"""The generic decode loop and samplers on a toy bigram 'model' (no network)."""

import itertools

import numpy as np
import keras
import pytest

from keras_bigmodels.generation import Sampler, beam_search, compile_function, decode
from tests.testing import to_numpy

VOCAB = 7


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return rng.normal(size=(VOCAB, VOCAB)).astype("float32") * 2


def bigram_step(table):
    logits_table = keras.ops.convert_to_tensor(table)

    def next_logits(token_ids, cache, index):
        # The cache counts calls, to show it is threaded through the loop.
        return keras.ops.take(logits_table, token_ids, axis=0), cache + 1

    return next_logits


def buffer(prompts, total):
    ids = np.zeros((len(prompts), total), "int32")
    mask = np.zeros((len(prompts), total), bool)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = p
        mask[i, :len(p)] = True
    return ids, mask


def test_greedy_decode_follows_argmax_and_keeps_prompts(table):
    prompts = [[1, 2], [3, 4, 5, 6]]
    ids, mask = buffer(prompts, 8)
    out = to_numpy(decode(bigram_step(table), keras.ops.zeros((2,)), keras.ops.array(ids),
                          keras.ops.array(mask), 2, Sampler("greedy")))
    for row, prompt in zip(out, prompts):
        expected = list(prompt)
        while len(expected) < 8:
            expected.append(int(np.argmax(table[expected[-1]])))
        assert row.tolist() == expected


def test_stop_tokens_pad_the_rest(table):
    first = int(np.argmax(table[1]))
    ids, mask = buffer([[1]], 6)
    out = to_numpy(decode(bigram_step(table), keras.ops.zeros((1,)), keras.ops.array(ids),
                          keras.ops.array(mask), 1, Sampler("greedy"),
                          stop_token_ids=(first,), pad_token_id=0))
    assert out[0].tolist() == [1, first, 0, 0, 0, 0]


def test_samplers(table):
    logits = keras.ops.convert_to_tensor(table[:3])
    argmax = np.argmax(table[:3], axis=-1)
    u = keras.ops.convert_to_tensor(np.array([0.3, 0.6, 0.99], "float32"))
    assert (to_numpy(Sampler("top_k", top_k=1)(logits, u)) == argmax).all()
    assert (to_numpy(Sampler("top_p", top_p=1e-6)(logits, u)) == argmax).all()
    # Inverse-CDF sampling: a sweep of uniforms reproduces the softmax probabilities.
    probs = np.exp(table[0]) / np.exp(table[0]).sum()
    sweep = (np.arange(2000, dtype="float32") + 0.5) / 2000
    row = keras.ops.convert_to_tensor(np.repeat(table[:1], 2000, axis=0))
    picks = to_numpy(Sampler("random")(row, keras.ops.convert_to_tensor(sweep)))
    assert np.abs(np.bincount(picks, minlength=VOCAB) / 2000 - probs).max() < 2e-3
    top2 = to_numpy(Sampler("top_k", top_k=2)(row, keras.ops.convert_to_tensor(sweep)))
    assert set(top2.tolist()) == set(np.argsort(-table[0])[:2].tolist())
    with pytest.raises(ValueError, match="temperature"):
        Sampler("random", temperature=0)


def test_beam_search_finds_the_best_sequence(table):
    ids, mask = buffer([[2]], 4)
    step = bigram_step(table)
    run = compile_function(
        lambda i, m: beam_search(step, keras.ops.zeros((1,)), i, m, 1, num_beams=VOCAB ** 2),
        variables=[],
    )
    out, score = run(keras.ops.array(ids), keras.ops.array(mask))
    log_probs = table - np.log(np.exp(table).sum(-1, keepdims=True))
    best = max(itertools.product(range(VOCAB), repeat=3),
               key=lambda s: log_probs[2, s[0]] + log_probs[s[0], s[1]] + log_probs[s[1], s[2]])
    assert to_numpy(out)[0].tolist() == [2, *best]
    expected = log_probs[2, best[0]] + log_probs[best[0], best[1]] + log_probs[best[1], best[2]]
    assert abs(float(to_numpy(score)[0]) - expected) < 1e-4
