"""CausalLM: the task base of decoder-only language models; owns `generate()`."""

import numpy as np
from keras import ops

from keras_bigmodels.backend import compile_function
from keras_bigmodels.backend.decoding import own
from keras_bigmodels.generation import beam_search, decode
from keras_bigmodels.models.generative import GenerativeTask, bucket_length
from keras_bigmodels.utils import check_positive_int


class CausalLM(GenerativeTask):
    """Base of decoder-only language-model tasks: `generate()` with a KV cache.

    The decode protocol a subclass provides:

    - `self.backbone` with `vocabulary_size`, `max_sequence_length` (None if unlimited),
      `initial_cache(batch_size, max_length)` (a nest of zero tensors whose first axis is
      the batch) and `call_with_cache(token_ids, cache, cache_update_index)` ->
      `(hidden, cache)`, the hidden states of `token_ids` written at that position;
    - `logits_from_hidden(hidden)`: the output layer (called through
      `backend.decoding.invoke` for its layers, so torch's eager loop stays fast);
    - `self.tokenizer` (or None) for string prompts; optional `eos_token_id`.

    The loop is compiled once per (sampler, beams, stop tokens, bucketed lengths) and
    kept in a bounded table (`GenerativeTask`).

    Example:
    >>> lm = GPTCausalLM(GPTBackbone(100, 2, 2, 32, 64, max_sequence_length=32))
    >>> lm.generate([[1, 2, 3], [4, 5]], max_new_tokens=4, sampler="beam", num_beams=3)
    """

    def logits_from_hidden(self, hidden):
        raise NotImplementedError(f"{type(self).__name__} must implement logits_from_hidden.")

    def input_ranges(self):
        return {"token_ids": (0, self.backbone.vocabulary_size)}

    def label_range(self):
        return (0, self.backbone.vocabulary_size)

    def next_logits(self, token_ids, cache, cache_update_index):
        """One cached step: float32 logits of `token_ids` at `cache_update_index`, and the cache."""
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index)
        return ops.cast(self.logits_from_hidden(hidden), "float32"), cache

    def _generate_function(self, sampler, num_beams, stop_token_ids, pad_token_id,
                           prefill_length, total_length, length_penalty, max_new_tokens):
        key = ("causal", sampler.key(), num_beams, stop_token_ids, pad_token_id,
               prefill_length, total_length, length_penalty, max_new_tokens)

        def build():
            def generate(token_ids, prompt_mask, start_index, uniform):
                self._count_trace()
                batch = ops.shape(token_ids)[0]
                cache = own(self.backbone.initial_cache(batch, total_length))
                # Prefill the (bucketed) prompt block in one pass. Positions from
                # start_index - 1 on (the shortest prompt's end) are recomputed by the
                # loop, which feeds longer prompts token by token and writes each row's
                # continuation; causal attention never reads a position before the loop
                # rewrites it.
                _, cache = self.next_logits(token_ids[:, :prefill_length], cache, 0)
                if num_beams > 1:
                    ids, _ = beam_search(self.next_logits, cache, token_ids, prompt_mask,
                                         start_index, num_beams, stop_token_ids,
                                         length_penalty, max_new_tokens)
                    return ids
                # Greedy reads no random numbers: no per-step gather of them.
                return decode(self.next_logits, cache, token_ids, prompt_mask, start_index,
                              sampler, stop_token_ids, uniform if sampler.is_random else None,
                              pad_token_id, max_new_tokens)

            return compile_function(generate, self.variables)

        return self._compiled_function(key, build)

    def generate(self, prompts, max_new_tokens=32, sampler="greedy", temperature=1.0,
                 top_k=50, top_p=0.9, num_beams=4, length_penalty=1.0,
                 stop_token_ids="auto", seed=None):
        """Continue prompts with a KV cache and a compiled decode loop.

        Every row of a batch decodes exactly as it would alone (its own end, its own random
        numbers), whatever the other prompts' lengths.

        Args:
            prompts: a string or list of strings (needs a tokenizer; returns strings), a
                list of id lists (returns lists: prompt + continuation, cut after a stop
                token), a flat list of ids or 1-D int array (one prompt; returns one list),
                or an int array [batch, length] (returns an array
                [batch, length + max_new_tokens], padded after a stop token).
            max_new_tokens: tokens to add to each prompt.
            sampler: "greedy", "random", "top_k", "top_p" or "beam".
            temperature, top_k, top_p: sampling parameters.
            num_beams: beams of "beam".
            length_penalty: "beam" ranks a finished beam by
                sum_logprob / generated_length ** length_penalty (Hugging Face's
                convention); 0 ranks by the raw summed log-probability.
            stop_token_ids: ids that end a row; "auto" is the model's or tokenizer's
                end-of-text id (none without one); None or () never stops early.
            seed: None, an int, or one int per prompt, for the random samplers.

        Example:
        >>> lm.generate(["The attention"], max_new_tokens=16, sampler="top_p", seed=0)
        """
        check_positive_int("max_new_tokens", max_new_tokens)
        rows, kind = self._rows(prompts)
        self._check_rows(rows)
        stop_token_ids = self._stop_tokens(stop_token_ids)
        pad_token_id = stop_token_ids[0] if stop_token_ids else 0
        step_sampler, beams, penalty = self._sampler(sampler, temperature, top_k, top_p,
                                                     num_beams, length_penalty)
        lengths = [len(r) for r in rows]
        needed = max(lengths) + max_new_tokens
        limit = self.backbone.max_sequence_length
        if limit is not None and needed > limit:
            raise ValueError(
                f"The longest prompt ({max(lengths)} tokens) plus max_new_tokens "
                f"({max_new_tokens}) exceeds max_sequence_length={limit}.")
        # Only the prompt block is bucketed: max_new_tokens is part of the compiled
        # function's key anyway, and every extra cache position costs each step's attention.
        prefill_length = bucket_length(max(lengths), self.generate_lengths_multiple,
                                       None if limit is None else limit - max_new_tokens)
        total_length = prefill_length + max_new_tokens

        buffer = np.full((len(rows), total_length), pad_token_id, dtype="int32")
        mask = np.zeros((len(rows), total_length), dtype=bool)
        for i, row in enumerate(rows):
            buffer[i, :len(row)] = row
            mask[i, :len(row)] = True
        uniform = self._uniform(seed, len(rows), max_new_tokens)

        function = self._generate_function(step_sampler, beams, stop_token_ids, pad_token_id,
                                           prefill_length, total_length, penalty,
                                           max_new_tokens)
        output = function(ops.convert_to_tensor(buffer), ops.convert_to_tensor(mask),
                          ops.convert_to_tensor(min(lengths), "int32"),
                          ops.convert_to_tensor(uniform))
        output = ops.convert_to_numpy(output)
        return self._format_outputs(output, lengths, max_new_tokens, stop_token_ids, kind,
                             keep_prompt=True)
