"""Zero-, one- and few-shot evaluation as in the GPT-3 paper (Brown et al. 2020, Sec. 2).

A prompt is an optional task description, k solved examples and the query; a
multiple-choice answer is chosen by the (length-normalized) log-likelihood the model
gives each candidate completion.
"""

import numpy as np
from keras import ops

NORMALIZATIONS = ("none", "tokens", "characters")


def build_prompt(query, examples=(), num_shots=None, instruction="", example_separator="\n\n",
                 answer_separator=" ", seed=None):
    """A few-shot prompt: instruction, `num_shots` (context, answer) examples, then `query`.

    Args:
        query: the context to be completed.
        examples: (context, answer) pairs to draw demonstrations from.
        num_shots: k; defaults to all examples (0 gives zero-shot).
        instruction: a natural-language task description placed first.
        example_separator, answer_separator: text between examples / context and answer.
        seed: when set, demonstrations are drawn at random (as in the paper).

    Example:
    >>> build_prompt("2+2=", [("1+1=", "2")], instruction="Add.")
    'Add.\\n\\n1+1= 2\\n\\n2+2='
    """
    examples = list(examples)
    k = len(examples) if num_shots is None else num_shots
    if not 0 <= k <= len(examples):
        raise ValueError(f"`num_shots` must be in [0, {len(examples)}]; received {num_shots}.")
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(examples))[:k]
        shots = [examples[i] for i in order]
    else:
        shots = examples[:k]
    parts = [instruction] if instruction else []
    parts += [f"{context}{answer_separator}{answer}" for context, answer in shots]
    parts.append(query)
    return example_separator.join(parts)


def continuation_log_likelihoods(model, context_ids, continuations):
    """Summed log P(continuation | context) for each continuation (lists of ids)."""
    rows = [list(context_ids) + list(c) for c in continuations]
    length = max(len(r) for r in rows)
    batch = np.zeros((len(rows), length), dtype="int32")
    for i, row in enumerate(rows):
        batch[i, :len(row)] = row  # right padding: causal attention never looks ahead
    logits = ops.convert_to_numpy(ops.log_softmax(ops.cast(model(batch), "float32"), axis=-1))
    scores = []
    for i, continuation in enumerate(continuations):
        start = len(context_ids)
        positions = np.arange(start, start + len(continuation))
        scores.append(float(logits[i, positions - 1, np.asarray(continuation)].sum()))
    return scores


def score_choices(model, context, choices, tokenizer=None, normalize="tokens"):
    """Log-likelihood of each choice after the context, optionally length-normalized.

    Args:
        model: a causal LM returning logits (e.g. `GPTCausalLM`).
        context: a string (needs a tokenizer) or a list of ids.
        choices: strings or id lists.
        tokenizer: defaults to `model.tokenizer`.
        normalize: "none", "tokens" (mean per token) or "characters" (per character,
            strings only).

    Example:
    >>> score_choices(lm, "The sky is", [" blue", " a fish"])
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {NORMALIZATIONS}; received {normalize!r}.")
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if isinstance(context, str):
        if tokenizer is None:
            raise ValueError("String inputs need a tokenizer (pass `tokenizer=`).")
        context_ids = tokenizer.encode(context)
        choice_ids = [tokenizer.encode(c) for c in choices]
    else:
        context_ids, choice_ids = list(context), [list(c) for c in choices]
    if not context_ids:
        raise ValueError("`context` must hold at least one token.")
    totals = np.asarray(continuation_log_likelihoods(model, context_ids, choice_ids))
    if normalize == "tokens":
        totals = totals / np.asarray([max(1, len(c)) for c in choice_ids])
    elif normalize == "characters":
        if not all(isinstance(c, str) for c in choices):
            raise ValueError('normalize="characters" needs string choices.')
        totals = totals / np.asarray([max(1, len(c)) for c in choices])
    return totals


def evaluate_multiple_choice(model, items, examples=(), num_shots=0, tokenizer=None,
                             normalize="tokens", instruction="", seed=0):
    """Accuracy on items {"context", "choices", "label"} with k-shot prompts.

    Demonstrations are (context, correct answer) pairs drawn from `examples`.

    Example:
    >>> evaluate_multiple_choice(lm, items, examples=train_items, num_shots=3)
    """
    demos = [(e["context"], e["choices"][e["label"]]) for e in examples]
    correct = 0
    for i, item in enumerate(items):
        prompt = build_prompt(item["context"], demos, num_shots, instruction,
                              seed=None if seed is None else seed + i)
        choices = [" " + c for c in item["choices"]]
        scores = score_choices(model, prompt, choices, tokenizer, normalize)
        correct += int(np.argmax(scores) == item["label"])
    return correct / max(1, len(items))
