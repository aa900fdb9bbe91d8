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

from keras_bigmodels.backend.decoding import KerasKernels, eager_index, op_kernels, own
from keras_bigmodels.utils import check_finite_number

NEG_INF = -1e9


def _columns(x, index):
    """x[:, index:index + 1]: plain indexing at an eager step's Python int, no Keras op."""
    if isinstance(index, int):
        return x[:, index:index + 1]
    return ops.slice(x, [0, index], [ops.shape(x)[0], 1])


def _column(x, index):
    return _columns(x, index)[:, 0]


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
        logits, cache = next_logits(_columns(ids, index - 1), cache, index - 1)
        sampled = sampler(logits[:, -1, :], _step_uniform(uniform, index, prompt_lengths))
        in_prompt = _column(prompt_mask, index)
        done = ops.logical_or(done, ops.greater_equal(index, row_end))
        sampled = ops.where(done, pad_token_id, sampled)
        tokens = ops.where(in_prompt, _column(ids, index), sampled)
        ids = ops.slice_update(ids, [0, index], ops.cast(tokens, ids.dtype)[:, None])
        if stop_token_ids:  # static: without stop ids nothing more can end a row
            done = ops.logical_or(done, ops.logical_and(_is_stop(tokens, stop_token_ids),
                                                        ops.logical_not(in_prompt)))
        return index + 1, ids, cache, done

    _, token_ids, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(start_index, "int32"), token_ids, cache, done)
    )
    return token_ids


def repeat_batch(tree, times):
    """Repeat every tensor of a nest `times` along the batch axis (for beams).

    A gather, so each copy owns its memory (Keras' torch `repeat` of a single row is a
    broadcast view, which in-place cache writes must not touch)."""
    batch = ops.shape(keras.tree.flatten(tree)[0])[0]
    return (op_kernels() or KerasKernels).take_rows(
        tree, ops.repeat(ops.arange(batch), times))


def beam_search(next_logits, cache, token_ids, prompt_mask, start_index, num_beams,
                stop_token_ids=(), length_penalty=1.0, max_new_tokens=None):
    """Beam search as Hugging Face's `generate(num_beams=k)` (early_stopping=False); returns
    the best finished sequence's buffer [batch, total_length] and its score.

    Each step ranks the `keep` = max(2, 1 + len(stop_token_ids)) * k best continuations
    of the running beams by summed log-probability. Of those, the first k that end (a stop
    token, or the row's last position) enter a pool of k finished sequences scored
    `sum_logprob / generated_length ** length_penalty` (generated_length counts the tokens
    after the row's prompt, the stop token included); the best k that do not end keep
    running. A row stops when its pool is full and its best running beam, scored at its
    current length, cannot beat the pool's worst (HF's heuristic), or at its own
    `prompt length + max_new_tokens`; it is then frozen, so each row of a ragged batch
    gives what it gives decoded alone. The returned score is the pool's (normalized) one.

    `cache` is the prefix cache for the original batch; it is repeated per beam here.
    Positions after a returned sequence's end keep the value they had in `token_ids`, so a
    caller that fills its buffer with the pad id gets padded outputs.

    Args:
        length_penalty: finite float exponent of the length normalization (HF default 1.0);
            > 0 favours longer sequences, < 0 shorter ones, 0 ranks by raw log-probability.
        max_new_tokens: tokens each row adds after its own prompt (None: to the buffer end).
    """
    check_finite_number("length_penalty", length_penalty)
    total_length = token_ids.shape[1]
    batch = ops.shape(token_ids)[0]
    k = num_beams
    ids = repeat_batch(token_ids, k)
    cache = own(repeat_batch(cache, k))
    prompt_lengths, row_end, end_index = _row_limits(prompt_mask, total_length, max_new_tokens)
    keep = max(2, 1 + len(stop_token_ids)) * k
    rows = ops.arange(batch)[:, None]
    # All beams start identical: only beam 0 may expand at the first sampled step.
    run_scores = ops.reshape(
        ops.tile(ops.convert_to_tensor([0.0] + [NEG_INF] * (k - 1))[None, :], [batch, 1]), [-1])
    pool_ids = ids
    pool_scores = ops.full((batch, k), NEG_INF, dtype="float32")
    pool_done = ops.zeros((batch, k), dtype="bool")
    active = ops.ones((batch,), dtype="bool")

    def per_beam(row_values):
        return ops.reshape(ops.repeat(row_values[:, None], k, axis=1), [-1])

    # Step-invariant values, made once (on torch every op of the eager loop costs ~5 us).
    beam_rows = ops.arange(batch * k)
    first_k = ops.less(ops.arange(keep), k)[None, :]

    def cond(index, ids, cache, run_scores, pool_ids, pool_scores, pool_done, active):
        return ops.logical_and(ops.less(index, end_index), ops.any(active))

    def body(index, ids, cache, run_scores, pool_ids, pool_scores, pool_done, active):
        index = eager_index(index)
        logits, cache = next_logits(_columns(ids, index - 1), cache, index - 1)
        log_probs = ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1)
        vocabulary = log_probs.shape[-1]
        total = ops.reshape(run_scores[:, None] + log_probs, [batch, k * vocabulary])
        candidate_scores, candidate_index = ops.top_k(total, min(keep, k * vocabulary))
        width = candidate_scores.shape[-1]
        candidate_beam = candidate_index // vocabulary
        candidate_token = ops.cast(candidate_index % vocabulary, "int32")
        at_end = ops.greater_equal(index + 1, row_end)[:, None]
        if stop_token_ids:
            ends = ops.logical_or(
                ops.reshape(_is_stop(ops.reshape(candidate_token, [-1]), stop_token_ids),
                            [batch, width]), at_end)
        else:  # static: only the row's last position ends a beam
            ends = ops.broadcast_to(at_end, (batch, width))

        # The best k continuations that do not end keep running.
        running_rank = candidate_scores + ops.where(ends, NEG_INF, 0.0)
        next_scores, chosen = ops.top_k(running_rank, k)
        next_beam = ops.take_along_axis(candidate_beam, chosen, axis=1)
        next_token = ops.take_along_axis(candidate_token, chosen, axis=1)

        # Of the first k candidates, those that end enter the pool (normalized score).
        generated = ops.cast(ops.maximum(index + 1 - prompt_lengths, 1), "float32")
        scale = ops.power(generated, float(length_penalty))[:, None]
        entered = ops.logical_and(ends, first_k if width == keep
                                  else ops.less(ops.arange(width), k)[None, :])
        entering = ops.where(entered, candidate_scores / scale, NEG_INF)

        def merge():
            candidates = ops.take(ids, ops.reshape(candidate_beam + rows * k, [-1]), axis=0)
            candidates = ops.slice_update(
                candidates, [0, index],
                ops.cast(ops.reshape(candidate_token, [-1, 1]), ids.dtype))
            merged_scores = ops.concatenate([pool_scores, entering], axis=1)
            merged_pool_scores, picked = ops.top_k(merged_scores, k)
            merged_ids = ops.concatenate(
                [ops.reshape(pool_ids, [batch, k, total_length]),
                 ops.reshape(candidates, [batch, width, total_length])], axis=1)
            merged_pool_ids = ops.take(
                ops.reshape(merged_ids, [batch * (k + width), total_length]),
                ops.reshape(picked + rows * (k + width), [-1]), axis=0)
            merged_pool_done = ops.take_along_axis(
                ops.concatenate([pool_done, entered], axis=1), picked, axis=1)
            return merged_pool_ids, merged_pool_scores, merged_pool_done

        # Most steps end no beam: the sequences are gathered and merged only when one does.
        any_entered = ops.any(ops.logical_and(entered, active[:, None]))
        if isinstance(index, int):  # eager decoding: a Python branch (ops.cond builds an op)
            new_pool_ids, new_pool_scores, new_pool_done = (
                merge() if bool(any_entered) else (pool_ids, pool_scores, pool_done))
        else:
            new_pool_ids, new_pool_scores, new_pool_done = ops.cond(
                any_entered, merge, lambda: (pool_ids, pool_scores, pool_done))

        # HF's stop heuristic at the new length: can the best running beam still beat the
        # worst finished one (a pool slot still empty counts as beatable)?
        best_running = next_scores[:, :1] / scale
        worst = ops.where(new_pool_done,
                          ops.min(new_pool_scores, axis=1, keepdims=True), NEG_INF)
        improvable = ops.any(ops.greater(best_running, worst), axis=1)
        can_continue = ops.logical_not(ops.all(ends, axis=1))
        still_active = ops.logical_and(improvable, ops.logical_and(
            can_continue, ops.logical_not(at_end[:, 0])))

        # Rows inside their prompt take the prompt token and keep their beams; rows that
        # stopped keep their pool (their running beams no longer matter).
        in_prompt = _column(prompt_mask, index)
        beam_in_prompt = per_beam(in_prompt)
        updating = ops.logical_and(active, ops.logical_not(in_prompt))
        flat = ops.reshape(next_beam + rows * k, [-1])
        flat = ops.where(beam_in_prompt, beam_rows, flat)
        tokens = ops.where(beam_in_prompt,
                           ops.cast(_column(ids, index), "int32"), ops.reshape(next_token, [-1]))
        ids, cache = (op_kernels() or KerasKernels).take_rows((ids, cache), flat)
        ids = ops.slice_update(ids, [0, index], ops.cast(tokens, ids.dtype)[:, None])
        cache = own(cache)
        run_scores = ops.where(beam_in_prompt, run_scores, ops.reshape(next_scores, [-1]))
        pool_ids = ops.where(per_beam(updating)[:, None], new_pool_ids, pool_ids)
        pool_scores = ops.where(updating[:, None], new_pool_scores, pool_scores)
        pool_done = ops.where(updating[:, None], new_pool_done, pool_done)
        active = ops.where(updating, still_active, active)
        return index + 1, ids, cache, run_scores, pool_ids, pool_scores, pool_done, active

    state = ops.while_loop(
        cond, body,
        (ops.convert_to_tensor(start_index, "int32"), ids, cache, run_scores, pool_ids,
         pool_scores, pool_done, active),
    )
    pool_ids, pool_scores = state[4], state[5]
    # top_k keeps each pool sorted, so slot 0 is the best finished sequence of its row.
    return ops.take(pool_ids, ops.arange(batch) * k, axis=0), pool_scores[:, 0]
