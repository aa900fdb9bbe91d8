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
    # The score is HF's: the summed log-probability over the generated length ** 1.0.
    assert abs(float(to_numpy(score)[0]) - expected / 3) < 1e-4


def reference_beam_search(log_probs, prompt, total, k, stops, length_penalty):
    """Hugging Face's beam search (transformers' `_beam_search`, early_stopping=False) for
    one prompt, in plain Python: a pool of finished sequences beside k running beams."""
    keep = max(2, 1 + len(stops)) * k
    running = [(0.0 if b == 0 else -1e9, list(prompt)) for b in range(k)]
    pool = []  # (score, sequence), best first, at most k
    length = len(prompt)
    while length < total:
        candidates = [(score + log_probs[seq[-1], t], seq + [t])
                      for score, seq in running for t in range(VOCAB)]
        candidates = sorted(candidates, key=lambda c: -c[0])[:keep]
        ends = [seq[-1] in stops or length + 1 >= total for _, seq in candidates]
        ranked = sorted(((score - 1e9 * end, seq) for (score, seq), end
                         in zip(candidates, ends)), key=lambda c: -c[0])
        running = ranked[:k]
        generated = length + 1 - len(prompt)
        entering = [(score / generated ** length_penalty, seq)
                    for i, ((score, seq), end) in enumerate(zip(candidates, ends))
                    if i < k and end]
        pool = sorted(pool + entering, key=lambda c: -c[0])[:k]
        length += 1
        best_running = running[0][0] / (length - len(prompt)) ** length_penalty
        if (len(pool) == k and best_running <= pool[-1][0]) or all(ends):
            break
    score, seq = pool[0]
    return seq + [stops[0] if stops else 0] * (total - len(seq)), score


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -1.0])
def test_beam_search_equals_transformers_algorithm_on_ragged_rows(table, length_penalty):
    """Finished beams leave the running ones for a pool, as in transformers; each row of a
    ragged batch stops on its own and equals the prompt decoded alone."""
    log_probs = table - np.log(np.exp(table).sum(-1, keepdims=True))
    prompts = [[2], [5, 3, 1]]
    ids, mask = buffer(prompts, 7)
    step = bigram_step(table)
    for stop in range(VOCAB):
        ids[:] = np.where(mask, ids, stop)
        run = compile_function(
            lambda i, m: beam_search(step, keras.ops.zeros((2,)), i, m, 1, num_beams=3,
                                     stop_token_ids=(stop,),
                                     length_penalty=length_penalty, max_new_tokens=4),
            variables=[],
        )
        out, scores = run(keras.ops.array(ids), keras.ops.array(mask))
        for row, score, prompt in zip(to_numpy(out), to_numpy(scores), prompts):
            end = len(prompt) + 4
            expected, expected_score = reference_beam_search(log_probs, prompt, end, 3,
                                                             (stop,), length_penalty)
            assert row.tolist()[:end] == expected, (stop, prompt)
            assert abs(score - expected_score) < 1e-4


def test_beam_length_penalty_ranks_finished_beams_by_normalized_score():
    # From token 1: stop (0) with p=0.4 or a chain 2 -> 3 -> 4 -> 5 with p=0.6, 0.7, 0.7, 0.7
    # (the rest of each step's mass on stopping). Raw log-prob prefers the short beam
    # [1, 0] (log 0.4 = -0.92 > -1.58); divided by the generated length the 4-token chain
    # wins (-1.58 / 4 = -0.40 > -0.92 / 1).
    probs = np.full((VOCAB, VOCAB), 1e-6)
    probs[0, 0] = 1.0
    probs[1, 0], probs[1, 2] = 0.4, 0.6
    for token in (2, 3, 4, 5):
        probs[token, 0], probs[token, token % 5 + 1] = 0.3, 0.7
    table = np.log(probs / probs.sum(-1, keepdims=True)).astype("float32")
    ids, mask = buffer([[1]], 5)
    ids[:] = np.where(mask, ids, 0)

    def best(length_penalty, num_beams=4):
        run = compile_function(
            lambda i, m: beam_search(bigram_step(table), keras.ops.zeros((1,)), i, m, 1,
                                     num_beams=num_beams, stop_token_ids=(0,),
                                     length_penalty=length_penalty),
            variables=[],
        )
        out, score = run(keras.ops.array(ids), keras.ops.array(mask))
        return to_numpy(out)[0].tolist(), float(to_numpy(score)[0])

    # Brute force over every continuation of HF's score sum_logprob / length ** penalty.
    def exhaustive(length_penalty):
        scored = []
        for tail in itertools.product(range(VOCAB), repeat=4):
            seq, logp = [1], 0.0
            for token in tail:
                logp += table[seq[-1], token]
                seq.append(token)
                if token == 0:
                    break
            n = len(seq) - 1
            scored.append((logp / n ** length_penalty, seq + [0] * (5 - len(seq))))
        return max(scored)[1]

    short, long = [1, 0, 0, 0, 0], [1, 2, 3, 4, 5]
    for length_penalty, expected in ((0.0, short), (1.0, long), (2.0, long), (-1.0, short)):
        assert exhaustive(length_penalty) == expected
        sequence, score = best(length_penalty)
        assert sequence == expected, length_penalty
        # The score is the returned sequence's normalized one, as HF's sequences_scores.
        raw = sum(table[a, b] for a, b in zip(sequence, sequence[1:]) if a or b)
        generated = sequence.index(0) if 0 in sequence else len(sequence) - 1
        assert abs(score - raw / generated ** length_penalty) < 1e-4
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(bigram_step(table), keras.ops.zeros((1,)), keras.ops.array(ids),
                    keras.ops.array(mask), 1, num_beams=2, length_penalty=float("nan"))
