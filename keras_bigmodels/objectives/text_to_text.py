"""Text-to-text examples (T5 Sec. 2.4) and teacher-forcing batches for seq2seq models.

Every task is text in, text out; a task prefix tells the model which one ("summarize: ",
"translate English to German: "). `teacher_forcing_batch` turns inputs and targets into
what a `Seq2SeqLM` fits on: the decoder reads the targets shifted right behind the model's
start id and predicts the targets, with the loss weighted off on padding.
"""

import numpy as np

from keras_bigmodels.utils import check_positive_int

# Prefixes of T5's tasks (Raffel et al. 2020, Appendix D).
TASK_PREFIXES = {
    "summarize": "summarize: ",
    "translate_en_de": "translate English to German: ",
    "translate_en_fr": "translate English to French: ",
    "translate_en_ro": "translate English to Romanian: ",
    "cola": "cola sentence: ",
    "sst2": "sst2 sentence: ",
}


def add_task_prefix(texts, prefix):
    """`texts` with a task prefix, given as a `TASK_PREFIXES` key or the literal prefix.

    Example:
    >>> add_task_prefix(["That is good."], "translate_en_de")
    ['translate English to German: That is good.']
    """
    if isinstance(texts, str):
        raise ValueError("`texts` must be a list of strings; received one string.")
    prefix = TASK_PREFIXES.get(prefix, prefix)
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"`prefix` must be a non-empty string or one of "
                         f"{', '.join(TASK_PREFIXES)}; received {prefix!r}.")
    return [prefix + text for text in texts]


def _pad(rows, length, pad_token_id, name):
    out = np.full((len(rows), length), pad_token_id, "int32")
    mask = np.zeros((len(rows), length), bool)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"Row {i} of `{name}` has {len(row)} tokens, more than the "
                             f"length {length}; truncate it first.")
        out[i, :len(row)] = row
        mask[i, :len(row)] = True
    return out, mask


def teacher_forcing_batch(inputs, targets, decoder_start_token_id, pad_token_id=0,
                          inputs_length=None, targets_length=None):
    """(x, y, sample_weight) for `Seq2SeqLM.fit` from token-id inputs and targets.

    Args:
        inputs, targets: lists of 1-D id sequences (or 2-D arrays without padding).
        decoder_start_token_id: first decoder input (T5: 0, BART: 2).
        pad_token_id: padding id (T5: 0, BART: 1).
        inputs_length, targets_length: padded lengths (default: the longest row).

    Returns:
        x: dict of `encoder_token_ids`, `encoder_padding_mask`, `decoder_token_ids`
        (targets shifted right behind the start id), `decoder_padding_mask`;
        y: targets [batch, targets_length]; sample_weight: 1.0 on real target tokens.

    Example:
    >>> x, y, w = teacher_forcing_batch([[5, 6, 1]], [[7, 1]], decoder_start_token_id=0)
    >>> x["decoder_token_ids"].tolist(), y.tolist()
    ([[0, 7]], [[7, 1]])
    """
    if len(inputs) != len(targets) or not len(inputs):
        raise ValueError(f"`inputs` and `targets` must be non-empty and of one length; "
                         f"received {len(inputs)} and {len(targets)}.")
    inputs = [np.asarray(row).reshape(-1) for row in inputs]
    targets = [np.asarray(row).reshape(-1) for row in targets]
    if any(len(row) == 0 for row in inputs) or any(len(row) == 0 for row in targets):
        raise ValueError("Every row of `inputs` and `targets` needs at least one token.")
    inputs_length = inputs_length or max(len(row) for row in inputs)
    targets_length = targets_length or max(len(row) for row in targets)
    encoder_ids, encoder_mask = _pad(inputs, inputs_length, pad_token_id, "inputs")
    labels, label_mask = _pad(targets, targets_length, pad_token_id, "targets")
    decoder_ids = np.concatenate(
        [np.full((len(targets), 1), decoder_start_token_id, "int32"), labels[:, :-1]], axis=1)
    # Position t reads target t-1 (or the start id): real exactly when target t is.
    decoder_ids = np.where(label_mask, decoder_ids, pad_token_id).astype("int32")
    x = {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": label_mask,
    }
    return x, labels, label_mask.astype("float32")


def text_to_text_batch(inputs, targets, encode, eos_token_id, decoder_start_token_id,
                       pad_token_id=0, prefix=None, max_inputs_length=512,
                       max_targets_length=128, bos_token_id=None):
    """Tokenize (prefixed) input texts and target texts into a teacher-forcing batch.

    Each side is encoded, truncated to leave room for the special tokens, and closed
    with EOS (and opened with `bos_token_id` when given, as BART's <s>).

    Args:
        inputs, targets: lists of strings.
        encode: a callable str -> list of ids, or a tokenizer with `.encode`.
        eos_token_id, decoder_start_token_id, pad_token_id: the model's ids.
        prefix: a `TASK_PREFIXES` key or literal prefix for the inputs (None: no prefix).
        max_inputs_length, max_targets_length: lengths of the padded arrays.
        bos_token_id: prepended to both sides when given.

    Returns:
        (x, y, sample_weight) as `teacher_forcing_batch`.

    Example:
    >>> vocab = {w: i + 3 for i, w in enumerate("summarize: the cat sat cat".split())}
    >>> encode = lambda s: [vocab[w] for w in s.split()]
    >>> x, y, w = text_to_text_batch(["the cat sat"], ["cat"], encode, eos_token_id=1,
    ...                              decoder_start_token_id=0, prefix="summarize")
    >>> x["encoder_token_ids"].shape
    (1, 512)
    """
    check_positive_int("max_inputs_length", max_inputs_length)
    check_positive_int("max_targets_length", max_targets_length)
    encode = getattr(encode, "encode", encode)
    if not callable(encode):
        raise ValueError("`encode` must be a callable str -> ids or a tokenizer with `.encode`.")
    if prefix is not None:
        inputs = add_task_prefix(inputs, prefix)
    opening = [] if bos_token_id is None else [bos_token_id]

    def tokenize(texts, length, name):
        if isinstance(texts, str):
            raise ValueError(f"`{name}` must be a list of strings; received one string.")
        room = length - len(opening) - 1
        if room < 1:
            raise ValueError(f"The maximum length for `{name}` ({length}) leaves no room "
                             "for text next to the special tokens.")
        return [opening + list(encode(text))[:room] + [eos_token_id] for text in texts]

    return teacher_forcing_batch(
        tokenize(inputs, max_inputs_length, "inputs"),
        tokenize(targets, max_targets_length, "targets"),
        decoder_start_token_id, pad_token_id, max_inputs_length, max_targets_length)
