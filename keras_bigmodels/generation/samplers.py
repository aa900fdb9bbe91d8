"""Token samplers: logits [batch, vocabulary] -> next ids [batch], keras.ops only.

Random samplers draw by inverse CDF from a uniform number per row that the caller passes
in (`uniform`, [batch]), so the compiled decode loop holds no random state: the same
seed gives the same text on every backend, and nothing inside jit/XLA mutates a seed.
"""

from keras import ops

from keras_bigmodels.utils import check_in

SAMPLERS = ("greedy", "random", "top_k", "top_p", "beam")


def _inverse_cdf(probs, uniform):
    """Index i with cdf[i-1] <= u * total < cdf[i] for each row."""
    cdf = ops.cumsum(probs, axis=-1)
    threshold = uniform[:, None] * cdf[:, -1:]
    index = ops.sum(ops.cast(ops.less_equal(cdf, threshold), "int32"), axis=-1)
    return ops.minimum(index, ops.shape(probs)[-1] - 1)


class Sampler:
    """Picks the next token from logits.

    Args:
        name: "greedy", "random" (plain sampling), "top_k", "top_p" (nucleus).
        temperature: logits are divided by it before sampling.
        top_k: candidates kept by "top_k".
        top_p: probability mass kept by "top_p".

    Example:
    >>> Sampler("top_k", top_k=5)(keras.random.normal((2, 100)), keras.ops.ones((2,)) * 0.5)
    """

    def __init__(self, name="greedy", temperature=1.0, top_k=50, top_p=0.9):
        check_in("sampler", name, SAMPLERS[:-1])
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0; received {temperature}.")
        if name == "top_k" and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer; received {top_k!r}.")
        if name == "top_p" and not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1]; received {top_p}.")
        self.name = name
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = float(top_p)

    @property
    def is_random(self):
        return self.name != "greedy"

    def key(self):
        return (self.name, self.temperature, self.top_k, self.top_p)

    def __call__(self, logits, uniform=None):
        logits = ops.cast(logits, "float32")
        if self.name == "greedy":
            return ops.cast(ops.argmax(logits, axis=-1), "int32")
        logits = logits / self.temperature
        if self.name == "random":
            return _inverse_cdf(ops.softmax(logits, axis=-1), uniform)
        k = min(self.top_k, logits.shape[-1]) if self.name == "top_k" else logits.shape[-1]
        values, indices = ops.top_k(logits, k)  # sorted, highest first
        probs = ops.softmax(values, axis=-1)
        if self.name == "top_p":
            # Keep the smallest prefix whose mass reaches top_p (the first token always).
            before = ops.cumsum(probs, axis=-1) - probs
            probs = ops.where(ops.less(before, self.top_p), probs, 0.0)
        choice = _inverse_cdf(probs, uniform)
        return ops.cast(ops.take_along_axis(indices, choice[:, None], axis=-1)[:, 0], "int32")
