"""Masked language modelling (BERT section 3.1, RoBERTa's dynamic masking), pure numpy.

Of the non-special tokens, `mask_rate` (15%) are chosen; a chosen token becomes [MASK]
80% of the time, a random token 10%, and stays unchanged 10%. The loss is taken only on
the chosen positions: L_MLM = -sum_{i in Mask} log P(x_i | x_without_Mask). As in the
original TensorFlow code, the chosen positions are returned as a fixed-size list
(`mask_positions`, `mask_ids`, `mask_weights`) so that only those rows go through the
vocabulary projection.
"""

import numpy as np


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def mask_tokens(token_ids, vocabulary_size, mask_token_id, special_token_ids=(),
                mask_rate=0.15, max_predictions=None, mask_token_rate=0.8,
                random_token_rate=0.1, rng=None):
    """Choose and corrupt MLM targets in a batch of (padded) token ids.

    Args:
        token_ids: [batch, length] ints (padding included).
        vocabulary_size: random replacements are drawn from the non-special ids below it.
        mask_token_id: id of [MASK] (<mask> for RoBERTa).
        special_token_ids: ids never chosen (padding, [CLS], [SEP], ...).
        mask_rate: fraction of each row's non-special tokens to predict (15%).
        max_predictions: size of the returned position lists; defaults to
            round(length * mask_rate).
        mask_token_rate, random_token_rate: of the chosen tokens, fractions replaced by
            [MASK] and by a random token; the rest stays unchanged.
        rng: a numpy Generator or a seed.

    Returns:
        dict of `token_ids` (corrupted copy), `mask_positions` [batch, max_predictions],
        `mask_ids` (original ids there) and `mask_weights` (1.0 for real predictions,
        0.0 for padding of the lists).

    Example:
    >>> out = mask_tokens(np.array([[2, 10, 11, 12, 3, 0]]), 100, mask_token_id=4,
    ...                   special_token_ids=(0, 2, 3), rng=0)
    >>> sorted(out)
    ['mask_ids', 'mask_positions', 'mask_weights', 'token_ids']
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2:
        raise ValueError(f"`token_ids` must be [batch, length]; received shape {token_ids.shape}.")
    if not 0.0 < mask_rate <= 1.0:
        raise ValueError(f"`mask_rate` must be in (0, 1]; received {mask_rate}.")
    if mask_token_rate < 0 or random_token_rate < 0 or mask_token_rate + random_token_rate > 1:
        raise ValueError(
            "`mask_token_rate` and `random_token_rate` must be >= 0 and sum to at most 1; "
            f"received {mask_token_rate} and {random_token_rate}."
        )
    rng = _rng(rng)
    batch, length = token_ids.shape
    if max_predictions is None:
        max_predictions = max(1, int(round(length * mask_rate)))
    special = np.asarray(sorted(set(int(t) for t in special_token_ids) | {int(mask_token_id)}))
    replacements = np.setdiff1d(np.arange(vocabulary_size), special)
    candidates_mask = ~np.isin(token_ids, special)

    corrupted = token_ids.copy()
    positions = np.zeros((batch, max_predictions), "int32")
    ids = np.zeros((batch, max_predictions), "int32")
    weights = np.zeros((batch, max_predictions), "float32")
    for row in range(batch):
        candidates = np.flatnonzero(candidates_mask[row])
        if not len(candidates):
            continue
        count = min(max_predictions, max(1, int(round(len(candidates) * mask_rate))))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        draw = rng.random(count)
        to_mask = chosen[draw < mask_token_rate]
        to_random = chosen[(draw >= mask_token_rate) & (draw < mask_token_rate + random_token_rate)]
        positions[row, :count] = chosen
        ids[row, :count] = token_ids[row, chosen]
        weights[row, :count] = 1.0
        corrupted[row, to_mask] = mask_token_id
        corrupted[row, to_random] = rng.choice(replacements, size=len(to_random))
    return {"token_ids": corrupted, "mask_positions": positions, "mask_ids": ids,
            "mask_weights": weights}


class DynamicMasking:
    """A fresh mask every time a batch is drawn (RoBERTa section 4.1), or a fixed one.

    Args:
        examples: dict of [num_examples, length] arrays with at least `token_ids`
            (e.g. from `sentence_pairs.next_sentence_pairs` or `full_sentence_packing`).
        dynamic: re-mask at every epoch (RoBERTa); False masks each example once
            (BERT's static masking, without the 10x duplication).
        seed: for reproducible masks; **mask_kwargs go to `mask_tokens`.

    Example:
    >>> masking = DynamicMasking(examples, vocabulary_size=8000, mask_token_id=4,
    ...                          special_token_ids=(0, 2, 3))
    >>> batch = masking.batch(np.arange(16), epoch=0)
    """

    # The masking transform; subclasses with another one (VideoBERT's) set their own.
    mask_function = staticmethod(mask_tokens)

    def __init__(self, examples, dynamic=True, seed=0, **mask_kwargs):
        self.examples = {k: np.asarray(v) for k, v in examples.items()}
        self.dynamic = dynamic
        self.seed = seed
        self.mask_kwargs = mask_kwargs
        self._static = None
        if not dynamic:
            self._static = self.mask_function(self.examples["token_ids"], rng=seed, **mask_kwargs)

    def __len__(self):
        return len(self.examples["token_ids"])

    def batch(self, indices, epoch=0):
        """The examples at `indices` with MLM targets; masks depend on (seed, epoch, indices)."""
        indices = np.asarray(indices)
        out = {k: v[indices] for k, v in self.examples.items()}
        if self._static is not None:
            out.update({k: v[indices] for k, v in self._static.items()})
        else:
            rng = np.random.default_rng([self.seed, epoch, int(indices[0]), len(indices)])
            out.update(self.mask_function(out["token_ids"], rng=rng, **self.mask_kwargs))
        return out
