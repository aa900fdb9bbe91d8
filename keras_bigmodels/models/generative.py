"""What `CausalLM` and `Seq2SeqLM` share: prompt parsing, length buckets, a bounded cache of
compiled generate functions, sampler arguments, and turning buffers back into outputs."""

import collections

import keras
import numpy as np

from keras_bigmodels.generation import SAMPLERS, Sampler
from keras_bigmodels.models.base import SubclassedTask, Task
from keras_bigmodels.utils import check_finite_number, check_in, check_positive_int


def bucket_length(length, multiple=16, limit=None):
    """`length` rounded up to a multiple of `multiple` (at most `limit`, if given).

    Compiled generate functions are specialized on their buffer shapes; rounding lengths up
    means prompts of every length reuse a handful of functions instead of compiling once
    per length (a server answering arbitrary prompts compiles a few times, not thousands).
    """
    rounded = -(-int(length) // multiple) * multiple
    return rounded if limit is None else max(int(length), min(rounded, int(limit)))


class _GenerateState:
    def __init__(self):
        self.functions = collections.OrderedDict()
        self.traces = 0


class GenerativeMethods:
    """What the tasks that own `generate()` share; see `CausalLM` and `Seq2SeqLM`.

    Compiled generate functions are kept in a least-recently-used table of at most
    `max_compiled_functions` entries, keyed by the sampler, beams, stop tokens and the
    prompt length bucketed to a multiple of `generate_lengths_multiple`.
    """

    max_compiled_functions = 16
    # Prompt (and encoder input) lengths are rounded up to this multiple: larger means fewer
    # compilations for a server answering prompts of every length, smaller means less
    # padded attention work per step.
    generate_lengths_multiple = 16

    def _generate_cache(self):
        # A plain holder: Keras tracks dict and list attributes of a model (and would wrap
        # the table), and the compiled functions are no state to save.
        holder = self.__dict__.get("_generate_state")
        if holder is None:
            holder = _GenerateState()
            object.__setattr__(self, "_generate_state", holder)
        return holder.functions

    @property
    def _generate_functions(self):
        """The table of compiled generate functions (least recently used first)."""
        return self._generate_cache()

    @property
    def generate_traces(self):
        """How often a generate function was traced (JAX/TensorFlow compilations; on torch,
        which runs eagerly, calls)."""
        self._generate_cache()
        return self.__dict__["_generate_state"].traces

    def _compiled_function(self, key, build):
        """The compiled function for `key`, built by `build()` on a miss (LRU-bounded)."""
        table = self._generate_cache()
        if key in table:
            table.move_to_end(key)
            return table[key]
        function = build()
        table[key] = function
        while len(table) > self.max_compiled_functions:
            table.popitem(last=False)
        return function

    def _count_trace(self):
        """Called inside a generate function's Python body: on JAX and TensorFlow that runs
        once per trace (compilation), on torch once per call."""
        self._generate_cache()
        self.__dict__["_generate_state"].traces += 1

    # Arguments -----------------------------------------------------------------------
    def _rows(self, prompts, name="prompts", add_special_tokens=False):
        """(rows of ids, kind) where kind is "strings", "string", "lists" or "array".

        A flat list of ints is one prompt (as a 1-D array is), never one prompt per id.
        """
        if isinstance(prompts, str) or (
                isinstance(prompts, (list, tuple)) and len(prompts) > 0
                and all(isinstance(p, str) for p in prompts)):
            single = isinstance(prompts, str)
            if self.tokenizer is None:
                raise ValueError(
                    f"String `{name}` need a tokenizer: build the task with `tokenizer=...` "
                    "or pass token ids.")
            rows = self.tokenizer.encode([prompts] if single else list(prompts),
                                         add_special_tokens=add_special_tokens)
            return [list(r) for r in rows], "string" if single else "strings"
        if isinstance(prompts, (list, tuple)):
            if len(prompts) == 0:
                raise ValueError(f"`{name}` is empty: pass at least one prompt.")
            if all(isinstance(p, (int, np.integer)) for p in prompts):
                return [[int(p) for p in prompts]], "flat"
            rows = []
            for i, p in enumerate(prompts):
                array = np.asarray(p)
                if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
                    raise ValueError(
                        f"`{name}` must be strings, a list of int id lists, or an int array "
                        f"[batch, length]; item {i} is {type(p).__name__} of shape "
                        f"{array.shape}.")
                rows.append([int(t) for t in array])
            return rows, "lists"
        array = np.asarray(keras.ops.convert_to_numpy(prompts))
        if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
            return [[int(t) for t in array]], "flat"
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"`{name}` must be strings, a list of id lists or an int array "
                             f"[batch, length]; received shape {array.shape} of "
                             f"{array.dtype}.")
        return [[int(t) for t in r] for r in array], "array"

    def _check_rows(self, rows, name="prompts"):
        vocabulary = self.backbone.vocabulary_size
        for i, row in enumerate(rows):
            if len(row) == 0:
                raise ValueError(f"Every item of `{name}` needs at least one token; item {i} "
                                 "is empty.")
            if min(row) < 0 or max(row) >= vocabulary:
                bad = min(row) if min(row) < 0 else max(row)
                raise ValueError(f"`{name}` item {i} holds id {bad}, outside the vocabulary: "
                                 f"ids must be in [0, {vocabulary - 1}] "
                                 f"(vocabulary_size={vocabulary}).")

    def _sampler(self, sampler, temperature, top_k, top_p, num_beams, length_penalty):
        """(step sampler, beams, length penalty) from generate()'s arguments."""
        check_in("sampler", sampler, SAMPLERS)
        check_finite_number("length_penalty", length_penalty)
        if sampler == "beam":
            check_positive_int("num_beams", num_beams)
            return Sampler("greedy"), num_beams, float(length_penalty)
        return Sampler(sampler, temperature, top_k, top_p), 1, 1.0

    def _stop_tokens(self, stop_token_ids):
        if isinstance(stop_token_ids, str) and stop_token_ids == "auto":
            eos = getattr(self, "eos_token_id", None)
            if eos is None:
                eos = getattr(self.tokenizer, "eos_token_id", None)
            return () if eos is None else (int(eos),)
        if isinstance(stop_token_ids, (int, np.integer)):
            stop_token_ids = (stop_token_ids,)
        stops = tuple(int(t) for t in (stop_token_ids or ()))
        vocabulary = self.backbone.vocabulary_size
        for t in stops:
            if not 0 <= t < vocabulary:
                raise ValueError(f"`stop_token_ids` holds {t}, outside [0, {vocabulary - 1}].")
        return stops

    @staticmethod
    def _uniform(seed, batch, steps):
        """[batch, steps] uniform numbers; row i from its own generator, so a row's samples do
        not depend on the other rows of its batch. `seed`: None, an int (row i then draws
        from `default_rng([seed, i])`), or one int per row."""
        if seed is None:
            return np.random.default_rng().random((batch, steps), dtype=np.float32)
        if isinstance(seed, (list, tuple, np.ndarray)):
            seeds = [int(s) for s in seed]
            if len(seeds) != batch:
                raise ValueError(f"`seed` as a list needs one seed per prompt ({batch}); "
                                 f"received {len(seeds)}.")
            generators = [np.random.default_rng(s) for s in seeds]
        else:
            generators = [np.random.default_rng([int(seed), i]) for i in range(batch)]
        return np.stack([g.random(steps, dtype=np.float32) for g in generators])

    def _format_outputs(self, output, starts, max_new_tokens, stop_token_ids, kind, keep_prompt):
        """Rows of the output buffer cut after `max_new_tokens` or a stop token, in the form
        the prompts came in: strings, id lists, or an int array (padded after a stop)."""
        results = []
        for row, start in zip(output.tolist(), starts):
            continuation = row[start:start + max_new_tokens]
            for j, token in enumerate(continuation):
                if token in stop_token_ids:
                    continuation = continuation[:j]
                    break
            results.append((row[:start] if keep_prompt else []) + continuation)
        if kind in ("string", "strings"):
            texts = self.tokenizer.decode(results)
            return texts[0] if kind == "string" else texts
        if kind == "array":
            width = max(starts) * keep_prompt + max_new_tokens
            pad = stop_token_ids[0] if stop_token_ids else 0
            array = np.full((len(results), width), pad, dtype="int32")
            for i, r in enumerate(results):
                array[i, :len(r)] = r
            return array
        if kind == "flat":
            return results[0]
        return results

    # Config ---------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config["tokenizer"] = None if self.tokenizer is None else self.tokenizer.get_config()
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("tokenizer"), dict):
            from keras_bigmodels.tokenizers import Tokenizer

            config["tokenizer"] = Tokenizer.from_config(config["tokenizer"])
        return super().from_config(config)


class GenerativeTask(GenerativeMethods, Task):
    """Base of the functional tasks that own `generate()` (`CausalLM`, `Seq2SeqLM`)."""


class SubclassedGenerativeTask(GenerativeMethods, SubclassedTask):
    """Base of the subclassed tasks that own `generate()` (UniVL's captioning)."""
