"""Sentence-pair pretraining inputs, pure numpy: BERT's NSP, ALBERT's SOP, RoBERTa packing.

Documents are lists of sentences, each a list of token ids (tokenize
`keras_bigmodels.data.load_text()` with a `Tokenizer`). Pairs are packed as
[CLS] A [SEP] B [SEP] with segment ids 0 for "[CLS] A [SEP]" and 1 for "B [SEP]".
Labels follow Hugging Face: NSP 0 = B follows A, 1 = B is random; SOP 0 = original
order, 1 = swapped.
"""

import numpy as np


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_documents(documents, minimum=1):
    if not isinstance(documents, (list, tuple)) or len(documents) < minimum:
        raise ValueError(
            f"`documents` must be a list of at least {minimum} documents (lists of sentences "
            "of token ids)."
        )


def truncate_pair(tokens_a, tokens_b, max_tokens, rng):
    """Trim the longer segment, from the front or the back at random, until both fit."""
    tokens_a, tokens_b = list(tokens_a), list(tokens_b)
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
    return tokens_a, tokens_b


def pad_examples(token_lists, segment_lists, max_length, pad_token_id=0):
    """Right-pad lists of ids into `token_ids`, `segment_ids`, `padding_mask` arrays."""
    n = len(token_lists)
    token_ids = np.full((n, max_length), pad_token_id, "int32")
    segment_ids = np.zeros((n, max_length), "int32")
    padding_mask = np.zeros((n, max_length), "int32")
    for i, (tokens, segments) in enumerate(zip(token_lists, segment_lists)):
        token_ids[i, :len(tokens)] = tokens
        segment_ids[i, :len(segments)] = segments
        padding_mask[i, :len(tokens)] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}


def next_sentence_pairs(documents, max_length, cls_token_id, sep_token_id, pad_token_id=0,
                        task="nsp", short_sequence_probability=0.1, rng=None):
    """Sentence-pair examples for NSP (BERT) or sentence-order prediction (ALBERT).

    Follows BERT's `create_pretraining_data.py`: consecutive sentences of a document fill
    a chunk up to the target length; A is a random-length prefix of the chunk. For NSP, B
    is the rest of the chunk (label 0) or, half the time, text from a random other
    document (label 1, and the unused sentences are put back). For SOP, B is the rest of
    the chunk and half the time A and B are swapped (label 1).

    Args:
        documents: list of documents, each a list of sentences of token ids.
        max_length: length of the packed examples (3 places go to [CLS], [SEP], [SEP]).
        cls_token_id, sep_token_id, pad_token_id: special ids.
        task: "nsp" or "sop".
        short_sequence_probability: fraction of examples with a shorter random target,
            so the model also sees short inputs (BERT: 0.1).
        rng: a numpy Generator or a seed.

    Returns:
        dict of [num_examples, max_length] `token_ids`, `segment_ids`, `padding_mask` and
        [num_examples] `labels`.

    Example:
    >>> docs = [[[10, 11], [12, 13, 14]], [[20, 21, 22], [23]]]
    >>> pairs = next_sentence_pairs(docs, 16, cls_token_id=2, sep_token_id=3, rng=0)
    >>> pairs["token_ids"].shape[1]
    16
    """
    if task not in ("nsp", "sop"):
        raise ValueError(f"`task` must be one of 'nsp', 'sop'; received {task!r}.")
    if max_length < 5:
        raise ValueError(f"`max_length` must be at least 5; received {max_length}.")
    _check_documents(documents, minimum=2 if task == "nsp" else 1)
    rng = _rng(rng)
    max_tokens = max_length - 3
    tokens, segments, labels = [], [], []
    for doc_index, document in enumerate(documents):
        document = [list(s) for s in document if len(s)]
        target = max_tokens
        if rng.random() < short_sequence_probability:
            target = int(rng.integers(2, max_tokens + 1))
        chunk, chunk_length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                tokens_a = [t for s in chunk[:a_end] for t in s]
                tokens_b = [t for s in chunk[a_end:] for t in s]
                label = 0
                if task == "nsp" and (len(chunk) == 1 or rng.random() < 0.5):
                    label = 1
                    tokens_b = _random_segment(documents, doc_index, target - len(tokens_a), rng)
                    i -= len(chunk) - a_end  # put the unused sentences back
                elif task == "sop":
                    if not tokens_b:  # one long sentence: split it to have an order
                        cut = max(1, len(tokens_a) // 2)
                        tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
                    if tokens_b and rng.random() < 0.5:
                        tokens_a, tokens_b, label = tokens_b, tokens_a, 1
                if tokens_a and tokens_b:
                    tokens_a, tokens_b = truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                    tokens.append([cls_token_id, *tokens_a, sep_token_id, *tokens_b, sep_token_id])
                    segments.append([0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1))
                    labels.append(label)
                chunk, chunk_length = [], 0
            i += 1
    out = pad_examples(tokens, segments, max_length, pad_token_id)
    out["labels"] = np.asarray(labels, "int32")
    return out


def _random_segment(documents, doc_index, target, rng):
    other = doc_index
    while other == doc_index:
        other = int(rng.integers(len(documents)))
    document = [s for s in documents[other] if len(s)]
    start = int(rng.integers(len(document)))
    segment = []
    for sentence in document[start:]:
        segment.extend(sentence)
        if len(segment) >= target:
            break
    return segment


def full_sentence_packing(documents, max_length, cls_token_id, sep_token_id, pad_token_id=1,
                          document_separator_id=None):
    """RoBERTa's FULL-SENTENCES inputs: contiguous full sentences, no NSP.

    Sentences are packed in order into <s> ... </s> examples of at most `max_length`
    tokens, crossing document boundaries with an extra separator token (RoBERTa
    section 4.2); a sentence longer than an example is split.

    Args:
        documents: list of documents, each a list of sentences of token ids.
        max_length: length of the packed examples.
        cls_token_id, sep_token_id, pad_token_id: <s>, </s>, <pad> (RoBERTa: 0, 2, 1).
        document_separator_id: token between documents (defaults to `sep_token_id`).

    Returns:
        dict of [num_examples, max_length] `token_ids`, `segment_ids` (zeros),
        `padding_mask`.

    Example:
    >>> packed = full_sentence_packing([[[5, 6], [7]], [[8, 9]]], 8, 0, 2)
    >>> packed["token_ids"][0].tolist()
    [0, 5, 6, 7, 2, 8, 9, 2]
    """
    _check_documents(documents)
    if max_length < 3:
        raise ValueError(f"`max_length` must be at least 3; received {max_length}.")
    separator = sep_token_id if document_separator_id is None else document_separator_id
    room = max_length - 2
    examples, current = [], []

    def flush():
        if current:
            examples.append([cls_token_id, *current, sep_token_id])
            current.clear()

    for d, document in enumerate(documents):
        if d and current:
            if len(current) + 1 > room:
                flush()
            else:
                current.append(separator)
        for sentence in document:
            sentence = list(sentence)
            if len(current) + len(sentence) > room:
                flush()
            while len(sentence) > room:
                current.extend(sentence[:room])
                sentence = sentence[room:]
                flush()
            current.extend(sentence)
    flush()
    return pad_examples(examples, [[0] * len(e) for e in examples], max_length, pad_token_id)
