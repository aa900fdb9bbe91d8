"""Causal LM data: documents packed with an end-of-text token into fixed windows.

GPT-2/3 train on one long token stream cut into context-length windows, documents
separated by <|endoftext|>, so no position is wasted on padding. Pure numpy.
"""

import numpy as np

from keras_bigmodels.utils import check_positive_int


def pack_documents(documents, sequence_length, end_of_text_id, stride=None):
    """Pack tokenized documents into (x, y) windows for next-token prediction.

    Args:
        documents: list of token-id lists (one per document).
        sequence_length: window length; x and y are [num_windows, sequence_length].
        end_of_text_id: id appended after every document.
        stride: step between window starts (default `sequence_length`: no overlap).

    Returns:
        (x, y) int32 arrays, y being x shifted by one token. Usable with
        `model.fit(x, y, batch_size=...)` or `CausalLMBatches`.

    Example:
    >>> x, y = pack_documents([[5, 6, 7], [8, 9]], sequence_length=3, end_of_text_id=0)
    >>> x.tolist(), y.tolist()
    ([[5, 6, 7], [0, 8, 9]], [[6, 7, 0], [8, 9, 0]])
    """
    check_positive_int("sequence_length", sequence_length)
    stride = stride or sequence_length
    check_positive_int("stride", stride)
    stream = []
    for document in documents:
        stream.extend(int(t) for t in document)
        stream.append(int(end_of_text_id))
    stream = np.asarray(stream, dtype="int32")
    count = (len(stream) - 1 - sequence_length) // stride + 1
    if count <= 0:
        raise ValueError(
            f"The documents hold {len(stream)} tokens with end-of-text markers, fewer than "
            f"sequence_length + 1 = {sequence_length + 1}: use more text or a shorter "
            "`sequence_length`."
        )
    starts = np.arange(count) * stride
    index = starts[:, None] + np.arange(sequence_length + 1)[None, :]
    windows = stream[index]
    return windows[:, :-1], windows[:, 1:]


class CausalLMBatches:
    """Shuffled (x, y) batches of packed windows, re-cut at a random offset every epoch.

    A plain Python iterable of numpy batches (no tf.data): pass `iter(...)` or use
    `as_dataset()` for `model.fit` with `steps_per_epoch`.

    Args:
        documents: token-id lists.
        sequence_length, end_of_text_id: as in `pack_documents`.
        batch_size: windows per batch.
        seed: shuffling seed.

    Example:
    >>> batches = CausalLMBatches(docs, 64, eos, batch_size=8)
    >>> model.fit(batches.as_dataset(), epochs=2, steps_per_epoch=len(batches))
    """

    def __init__(self, documents, sequence_length, end_of_text_id, batch_size, seed=0):
        check_positive_int("batch_size", batch_size)
        self.documents = documents
        self.sequence_length = sequence_length
        self.end_of_text_id = end_of_text_id
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        x, _ = pack_documents(documents, sequence_length, end_of_text_id)
        self.num_windows = len(x)

    def __len__(self):
        return max(1, self.num_windows // self.batch_size)

    def __iter__(self):
        order = list(range(len(self.documents)))
        self.rng.shuffle(order)
        x, y = pack_documents([self.documents[i] for i in order], self.sequence_length,
                              self.end_of_text_id)
        perm = self.rng.permutation(len(x))
        for b in range(len(self)):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            if len(idx) == self.batch_size or b == 0:
                yield x[idx], y[idx]

    def as_dataset(self):
        """An endless generator of batches for `model.fit(..., steps_per_epoch=len(self))`."""
        while True:
            yield from self
