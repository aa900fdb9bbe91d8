"""The decode loop with a KV cache, generic over models (GPT, T5, BART, ...).

A model supplies `next_logits(token_ids, cache, index) -> (logits, cache)`: the logits
[batch, length, vocabulary] of `token_ids` [batch, length] written at position `index`,
and the updated cache (any nest of tensors whose first axis is the batch). The loop works
on a fixed-shape buffer `token_ids` [batch, total_length] holding right-padded prompts and
a boolean `prompt_mask` marking prompt positions: from `start_index` (the shortest prompt)
it feeds one token per step and writes the sampled one wherever the row's prompt has
ended. Because attention is causal, a row never sees the padding after its own prompt, so
prompts of different lengths decode exactly as they would alone, and greedy decoding equals
an uncached argmax loop. Each row stops at its own `prompt length + max_new_tokens` (a
shorter row of a ragged batch must not keep searching until the longest row ends: beam
search would rank its beams over a longer horizon than the same prompt decoded alone), and
random samplers read the row's own uniform numbers by generated step, so a row's result
does not depend on the other rows of its batch. Everything is `keras.ops`, so the whole loop compiles
(`backend.compile_function`) into one XLA program on JAX and TensorFlow.
"""

import keras
from keras import ops

from keras_bigmodels.backend.decoding import eager_index, own
from keras_bigmodels.utils import check_finite_number

NEG_INF = -1e9


def _column(x, index):
    return ops.slice(x, [0, index], [ops.shape(x)[0], 1])[:, 0]


def _is_stop(tokens, stop_token_ids):
    if not stop_token_ids:
        return ops.zeros_like(tokens, dtype="bool")
    stops = ops.convert_to_tensor(list(stop_token_ids), dtype="int32")
    return ops.any(ops.equal(tokens[:, None], stops[None, :]), axis=-1)


def _row_limits(prompt_mask, total_length, max_new_tokens):
    """(prompt lengths [batch], row ends [batch], loop end): row i writes positions
    [length_i, length_i + max_new_tokens) and the loop stops after the last row's end."""
    prompt_lengths = ops.sum(ops.cast(prompt_mask, "int32"), axis=1)
    if max_new_tokens is None:
        row_end = ops.full_like(prompt_lengths, total_length)
    else:
        row_end = ops.minimum(prompt_lengths + max_new_tokens, total_length)
    return prompt_lengths, row_end, ops.max(row_end)


def _step_uniform(uniform, index, prompt_lengths):
    """Each row's uniform number for the token at `index`: uniform[row, index - length]."""
    if uniform is None:
        return None
    step = ops.clip(index - prompt_lengths, 0, ops.shape(uniform)[1] - 1)
    return ops.take_along_axis(uniform, step[:, None], axis=1)[:, 0]


def decode(next_logits, cache, token_ids, prompt_mask, start_index, sampler,
           stop_token_ids=(), uniform=None, pad_token_id=0, max_new_tokens=None):
    """Greedy or sampled decoding; returns the filled `token_ids` buffer.

    Args:
        next_logits: the model's step function (see the module docstring).
        cache: the cache after the prompt prefix `[:start_index - 1]` was written
            (positions >= start_index - 1 are recomputed).
        token_ids: [batch, total_length] int32 buffer, prompts right-padded.
        prompt_mask: [batch, total_length] bool, True at prompt positions.
        start_index: first position to generate (>= 1; the shortest prompt's length).
        sampler: a `Sampler`.
        stop_token_ids: ids that end a row; later positions get `pad_token_id`.
        uniform: [batch, max_new_tokens] uniform numbers for random samplers, by
            generated step of each row.
        max_new_tokens: tokens each row adds after its own prompt (None: up to the end of
            the buffer); positions past a row's end get `pad_token_id`.
    """
    total_length = token_ids.shape[1]
    batch = ops.shape(token_ids)[0]
    done = ops.zeros((batch,), dtype="bool")
    prompt_lengths, row_end, end_index = _row_limits(prompt_mask, total_length, max_new_tokens)

    def cond(index, ids, cache, done):
        return ops.logical_and(ops.less(index, end_index),
                               ops.logical_not(ops.all(done)))

    def body(index, ids, cache, done):
        index = eager_index(index)
        logits, cache = next_logits(ops.slice(ids, [0, index - 1], [batch, 1]), cache,
                                    index - 1)
        sampled = sampler(logits[:, -1, :], _step_uniform(uniform, index, prompt_lengths))
        in_prompt = _column(prompt_mask, index)
        done = ops.logical_or(done, ops.greater_equal(index, row_end))
        sampled = ops.where(done, pad_token_id, sampled)
        tokens = ops.where(in_prompt, _column(ids, index), sampled)
        ids = ops.slice_update(ids, [0, index], ops.cast(tokens, ids.dtype)[:, None])
        done = ops.logical_or(
            done, ops.logical_and(_is_stop(tokens, stop_token_ids), ops.logical_not(in_prompt))
        )
        return index + 1, ids, cache, done

    _, token_ids, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(start_index, "int32"), token_ids, cache, done)
    )
    return token_ids


def repeat_batch(tree, times):
    """Repeat every tensor of a nest `times` along the batch axis (for beams).

    A gather, so each copy owns its memory (Keras' torch `repeat` of a single row is a
    broadcast view, which in-place cache writes must not touch)."""
    def repeat(x):
        return ops.take(x, ops.repeat(ops.arange(ops.shape(x)[0]), times), axis=0)

    return keras.tree.map_structure(repeat, tree)


def beam_search(next_logits, cache, token_ids, prompt_mask, start_index, num_beams,
                stop_token_ids=(), pad_token_id=0, length_penalty=1.0, max_new_tokens=None):
    """Beam search; returns the best beam's buffer [batch, total_length] and its log-prob.

    `cache` is the prefix cache for the original batch; it is repeated per beam here.
    A finished beam (stop token) keeps its score and length and is padded.

    A finished beam scores as in Hugging Face, `sum_logprob / generated_length **
    length_penalty`, where `generated_length` counts the tokens after the row's prompt,
    stop token included (a beam that reaches the end of the buffer finishes there).
    Unlike HF, which keeps finished hypotheses in a separate pool, a finished beam keeps
    its slot among the `num_beams` and competes with the running beams, which all share
    one length within a row, on the same normalized score. `length_penalty` > 0 favours
    longer sequences, < 0 shorter ones, and 0 ranks by the raw summed log-probability.
    The returned score is the raw summed log-probability of the returned beam.

    Each row finishes its beams at its own `prompt length + max_new_tokens` (where HF's
    max_new_tokens ends it when the row is decoded alone).

    Args:
        length_penalty: finite float exponent of the length normalization (HF default 1.0).
        max_new_tokens: tokens each row adds after its own prompt (None: to the buffer end).
    """

    check_finite_number("length_penalty", length_penalty)
    total_length = token_ids.shape[1]
    batch = ops.shape(token_ids)[0]
    k = num_beams
    ids = repeat_batch(token_ids, k)
    prompt_mask = repeat_batch(prompt_mask, k)
    cache = own(repeat_batch(cache, k))
    prompt_lengths, row_end, end_index = _row_limits(prompt_mask, total_length, max_new_tokens)
    # All beams start identical: only beam 0 may expand at the first sampled step.
    scores = ops.reshape(
        ops.tile(ops.convert_to_tensor([0.0] + [NEG_INF] * (k - 1))[None, :], [batch, 1]), [-1]
    )
    lengths = ops.zeros((batch * k,), dtype="int32")
    done = ops.zeros((batch * k,), dtype="bool")

    def normalized(raw, length):
        # Masked candidates (NEG_INF) stay masked: dividing them could lift them above
        # real beams when length ** length_penalty is large.
        scale = ops.power(ops.cast(ops.maximum(length, 1), "float32"), float(length_penalty))
        return ops.where(ops.less(raw, NEG_INF / 2), raw, raw / scale)

    def cond(index, ids, cache, scores, lengths, done):
        return ops.logical_and(ops.less(index, end_index),
                               ops.logical_not(ops.all(done)))

    def body(index, ids, cache, scores, lengths, done):
        index = eager_index(index)
        # A beam that has written its row's max_new_tokens is finished, as if it had stopped.
        done = ops.logical_or(done, ops.greater_equal(index, row_end))
        logits, cache = next_logits(ops.slice(ids, [0, index - 1], [batch * k, 1]), cache,
                                    index - 1)
        log_probs = ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1)
        vocabulary = log_probs.shape[-1]
        pad_only = ops.where(ops.equal(ops.arange(vocabulary), pad_token_id), 0.0, NEG_INF)
        log_probs = ops.where(done[:, None], pad_only[None, :], log_probs)
        total = scores[:, None] + log_probs
        # A running beam's candidates have the length the token at `index` gives it; a
        # finished beam's only live candidate (the pad) keeps its length.
        candidate_lengths = ops.where(done, lengths, index - prompt_lengths + 1)
        ranked = normalized(total, candidate_lengths[:, None])
        _, top_index = ops.top_k(ops.reshape(ranked, [batch, k * vocabulary]), k)
        top_scores = ops.take_along_axis(ops.reshape(total, [batch, k * vocabulary]),
                                         top_index, axis=-1)
        beam = top_index // vocabulary
        tokens = ops.cast(top_index % vocabulary, "int32")
        # Rows still inside their prompt keep their beams and take the prompt token.
        in_prompt = _column(prompt_mask, index)
        row_in_prompt = ops.reshape(in_prompt, [batch, k])[:, :1]
        given = ops.reshape(ops.cast(_column(ids, index), "int32"), [batch, k])
        beam = ops.where(row_in_prompt, ops.arange(k)[None, :], beam)
        tokens = ops.where(row_in_prompt, given, tokens)
        top_scores = ops.where(row_in_prompt, ops.reshape(scores, [batch, k]), top_scores)
        flat = ops.reshape(beam + ops.arange(batch)[:, None] * k, [-1])
        ids = ops.take(ids, flat, axis=0)
        cache = own(keras.tree.map_structure(lambda c: ops.take(c, flat, axis=0), cache))
        lengths = ops.take(candidate_lengths, flat, axis=0)
        done = ops.take(done, flat, axis=0)
        tokens = ops.reshape(tokens, [-1])
        ids = ops.slice_update(ids, [0, index], ops.cast(tokens, ids.dtype)[:, None])
        done = ops.logical_or(
            done, ops.logical_and(_is_stop(tokens, stop_token_ids), ops.logical_not(in_prompt))
        )
        return index + 1, ids, cache, ops.reshape(top_scores, [-1]), lengths, done

    _, ids, _, scores, _, _ = ops.while_loop(
        cond, body,
        (ops.convert_to_tensor(start_index, "int32"), ids, cache, scores, lengths, done),
    )
    # top_k keeps beams sorted by their normalized score, so beam 0 is the best of each row.
    best = ops.arange(batch) * k
    return ops.take(ids, best, axis=0), ops.take(scores, best, axis=0)
