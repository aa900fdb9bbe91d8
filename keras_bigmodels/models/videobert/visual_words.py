"""VideoBERT's visual words: frame (or clip) features quantized by hierarchical k-means.

VideoBERT (Sun et al. 2019, section 3.2) turns a video into tokens by encoding 1.5 s clips
with a pretrained video network (S3D) and quantizing the features with hierarchical
k-means: k=12 clusters at each of 4 levels, 12^4 = 20,736 visual words. A word is the
path through the tree, written as a base-k number (level 1 is the most significant
digit), so words that share a prefix lie in the same coarse cluster.

`VideoTokenizer` does the quantization in numpy, seeded, and saves/loads its centroids;
it takes features from any encoder (an array, or a callable applied to frames).
`PixelPCA` is the small encoder the tests and the guide use: a PCA of the raw pixels.
"""

import json
import os

import numpy as np


def _as_features(features, name="features"):
    features = np.asarray(features, dtype=np.float32)
    if features.ndim < 2:
        raise ValueError(f"`{name}` must be [..., feature_dim]; received shape {features.shape}.")
    if not np.isfinite(features).all():
        raise ValueError(f"`{name}` holds NaN or infinite values.")
    return features


def kmeans(points, num_clusters, rng, num_iterations=20):
    """Lloyd's k-means with k-means++ seeding; returns centroids [num_clusters, dim].

    With fewer distinct points than clusters, the points are repeated: the extra centroids
    duplicate earlier ones, and `argmin` always picks the first of equal distances, so a
    duplicate is never assigned.

    Example:
    >>> kmeans(np.random.default_rng(0).normal(size=(100, 2)), 4, np.random.default_rng(0)).shape
    (4, 2)
    """
    points = np.asarray(points, np.float64)
    count = len(points)
    if count <= num_clusters:
        index = np.arange(num_clusters) % count
        return points[index].astype(np.float32)
    # k-means++ seeding: each new centroid drawn in proportion to the squared distance to
    # the nearest chosen one, so the clusters start spread out.
    centroids = [points[rng.integers(count)]]
    nearest = ((points - centroids[0]) ** 2).sum(-1)
    for _ in range(1, num_clusters):
        total = nearest.sum()
        if total <= 0:
            centroids.append(points[rng.integers(count)])
            continue
        choice = rng.choice(count, p=nearest / total)
        centroids.append(points[choice])
        nearest = np.minimum(nearest, ((points - points[choice]) ** 2).sum(-1))
    centroids = np.stack(centroids)
    for _ in range(num_iterations):
        assignment = _nearest(points, centroids)
        updated = centroids.copy()
        for cluster in range(num_clusters):
            members = points[assignment == cluster]
            if len(members):
                updated[cluster] = members.mean(0)
        if np.allclose(updated, centroids):
            break
        centroids = updated
    return centroids.astype(np.float32)


def _nearest(points, centroids):
    """Index of the nearest centroid per point ([n, d] against [k, d])."""
    distances = ((points ** 2).sum(-1)[:, None] - 2 * points @ centroids.T
                 + (centroids ** 2).sum(-1)[None, :])
    return np.argmin(distances, axis=-1)


class VideoTokenizer:
    """Hierarchical k-means over frame/clip features: features in, visual word ids out.

    Args:
        num_levels: depth of the tree (4 in VideoBERT).
        branching_factor: clusters per node, k (12 in VideoBERT): `num_levels` levels give
            k ** num_levels visual words (20,736 for the paper's 4 x 12).
        token_offset: added to every word id, so that visual ids come after the text
            vocabulary in one joint vocabulary (VideoBERT extends BERT's word pieces).
        num_iterations: Lloyd iterations per k-means.
        seed: the seed of every k-means; the same features and seed give the same words.
        feature_encoder: optional callable mapping frames [n, ...] to features [n, dim];
            when set, `fit`/`encode` may be given frames instead of features.

    Example:
    >>> features = np.random.default_rng(0).normal(size=(500, 16))
    >>> tokenizer = VideoTokenizer(num_levels=2, branching_factor=4, token_offset=100)
    >>> tokenizer.fit(features).encode(features[:3]).shape
    (3,)
    """

    def __init__(self, num_levels=4, branching_factor=12, token_offset=0, num_iterations=20,
                 seed=0, feature_encoder=None):
        for name, value in (("num_levels", num_levels), ("branching_factor", branching_factor),
                            ("num_iterations", num_iterations)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; received {value!r}.")
        if branching_factor < 2:
            raise ValueError(f"`branching_factor` must be at least 2; received {branching_factor}.")
        if not isinstance(token_offset, (int, np.integer)) or token_offset < 0:
            raise ValueError(f"`token_offset` must be an int >= 0; received {token_offset!r}.")
        if feature_encoder is not None and not callable(feature_encoder):
            raise ValueError(f"`feature_encoder` must be callable or None; received "
                             f"{feature_encoder!r}.")
        self.num_levels = int(num_levels)
        self.branching_factor = int(branching_factor)
        self.token_offset = int(token_offset)
        self.num_iterations = int(num_iterations)
        self.seed = seed
        self.feature_encoder = feature_encoder
        # centroids[level]: [k ** level, k, dim], the k children of every node of `level`.
        self.centroids = None

    @property
    def vocabulary_size(self):
        """Number of visual words, k ** num_levels."""
        return self.branching_factor ** self.num_levels

    @property
    def fitted(self):
        return self.centroids is not None

    @property
    def feature_dim(self):
        return None if self.centroids is None else self.centroids[0].shape[-1]

    def _features(self, inputs, name):
        if self.feature_encoder is None:
            return _as_features(inputs, name)
        frames = np.asarray(inputs)
        if frames.ndim < 4:
            raise ValueError(f"`{name}` must be frames [..., H, W, C] for the `feature_encoder`; "
                             f"received shape {frames.shape}.")
        # The encoder sees a flat batch of frames; the leading (video, time) axes come back.
        flat_frames = frames.reshape((-1,) + frames.shape[-3:])
        features = _as_features(self.feature_encoder(flat_frames), name)
        return features.reshape(frames.shape[:-3] + features.shape[-1:])

    def fit(self, features, mask=None):
        """Fit the tree on features [..., dim] (or frames, with a `feature_encoder`).

        Args:
            features: [..., dim] features, e.g. [videos, frames, dim].
            mask: optional bool array of features' leading shape; False entries (padding
                frames) are left out of the fit.

        Returns:
            self.
        """
        features = self._features(features, "features")
        flat = features.reshape(-1, features.shape[-1])
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != features.shape[:-1]:
                raise ValueError(f"`mask` must have shape {features.shape[:-1]}; received "
                                 f"{mask.shape}.")
            flat = flat[mask.reshape(-1)]
        if len(flat) < self.branching_factor:
            raise ValueError(
                f"`features` must hold at least `branching_factor` ({self.branching_factor}) "
                f"vectors to fit; received {len(flat)}."
            )
        rng = np.random.default_rng(self.seed)
        k = self.branching_factor
        centroids = []
        node = np.zeros(len(flat), np.int64)  # each point's node at the current level
        for level in range(self.num_levels):
            level_centroids = np.zeros((k ** level, k, flat.shape[-1]), np.float32)
            for index in range(k ** level):
                members = flat[node == index]
                if len(members):
                    level_centroids[index] = kmeans(members, k, rng, self.num_iterations)
                else:
                    # An empty node is never reached by `encode` on the fitted data; its
                    # children copy the parent centroid so that the table stays finite.
                    parent = centroids[-1][index // k, index % k] if level else 0.0
                    level_centroids[index] = parent
            members_children = self._assign(flat, node, level_centroids)
            node = node * k + members_children
            centroids.append(level_centroids)
        self.centroids = centroids
        return self

    @staticmethod
    def _assign(points, node, level_centroids):
        """The child (0..k-1) of each point's node nearest to the point."""
        children = level_centroids[node]  # [n, k, dim]
        distances = ((points[:, None, :] - children) ** 2).sum(-1)
        return np.argmin(distances, axis=-1)

    def encode(self, features):
        """Visual word ids (offset by `token_offset`) of features [..., dim] -> [...].

        Example:
        >>> ids = tokenizer.encode(video_features)  # [videos, frames]
        """
        if not self.fitted:
            raise ValueError("The VideoTokenizer is not fitted: call `fit(features)` or "
                             "`load(path)` first.")
        features = self._features(features, "features")
        if features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"`features` must have feature_dim {self.feature_dim} (the fitted one); "
                f"received shape {features.shape}."
            )
        flat = features.reshape(-1, features.shape[-1])
        node = np.zeros(len(flat), np.int64)
        for level_centroids in self.centroids:
            node = node * self.branching_factor + self._assign(flat, node, level_centroids)
        return (node + self.token_offset).astype(np.int32).reshape(features.shape[:-1])

    __call__ = encode

    def levels(self, ids):
        """The path of each visual word through the tree: [..., num_levels] ints in [0, k).

        Example:
        >>> tokenizer.levels(tokenizer.token_offset + 13)  # k=12: [0, 0, 1, 1]
        """
        ids = np.asarray(ids, np.int64) - self.token_offset
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocabulary_size):
            raise ValueError(
                f"`ids` must be visual word ids in [{self.token_offset}, "
                f"{self.token_offset + self.vocabulary_size}); received "
                f"{ids.min() + self.token_offset}"
                f"..{ids.max() + self.token_offset}."
            )
        digits = []
        for _ in range(self.num_levels):
            digits.append(ids % self.branching_factor)
            ids = ids // self.branching_factor
        return np.stack(digits[::-1], axis=-1).astype(np.int32)

    def decode(self, ids):
        """The leaf centroid (a feature vector) of each visual word id: [..., dim]."""
        if not self.fitted:
            raise ValueError("The VideoTokenizer is not fitted: call `fit(features)` first.")
        word = np.asarray(ids, np.int64) - self.token_offset
        self.levels(ids)  # range check
        k = self.branching_factor
        return self.centroids[-1][word // k, word % k]

    # Saving ------------------------------------------------------------------------------
    def get_config(self):
        """Constructor kwargs (the centroids are saved by `save`; the encoder is not)."""
        return {"num_levels": self.num_levels, "branching_factor": self.branching_factor,
                "token_offset": self.token_offset, "num_iterations": self.num_iterations,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def save(self, path):
        """Write the config and the centroids to one `.npz` file (no pickle).

        Example:
        >>> tokenizer.save("visual_words.npz")
        >>> VideoTokenizer.load("visual_words.npz").encode(features)
        """
        if not self.fitted:
            raise ValueError("The VideoTokenizer is not fitted: nothing to save.")
        arrays = {f"level_{i}": c for i, c in enumerate(self.centroids)}
        np.savez(os.fspath(path), config=np.asarray(json.dumps(self.get_config())), **arrays)

    @classmethod
    def load(cls, path, feature_encoder=None):
        """A fitted tokenizer from `save`'s file; pass the `feature_encoder` again if any."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"`path` `{path}` is not a file written by VideoTokenizer.save.")
        with np.load(path, allow_pickle=False) as stored:
            if "config" not in stored.files:
                raise ValueError(f"`path` `{path}` is not a file written by VideoTokenizer.save.")
            tokenizer = cls(**json.loads(str(stored["config"])), feature_encoder=feature_encoder)
            tokenizer.centroids = [stored[f"level_{i}"] for i in range(tokenizer.num_levels)]
        return tokenizer

    def __repr__(self):
        state = f"fitted, feature_dim={self.feature_dim}" if self.fitted else "not fitted"
        return (f"VideoTokenizer(num_levels={self.num_levels}, branching_factor="
                f"{self.branching_factor}, vocabulary_size={self.vocabulary_size}, "
                f"token_offset={self.token_offset}, {state})")


class PixelPCA:
    """A tiny frame encoder: the principal components of raw pixels (numpy).

    The guide and tests quantize these features into visual words instead of a pretrained
    video network's (S3D in VideoBERT): on the moving digits they capture where the
    digit is and roughly its shape, which is what the visual words must tell apart.

    Args:
        num_components: output feature size.

    Example:
    >>> pca = PixelPCA(16).fit(frames)          # frames [n, H, W, C] or [n, T, H, W, C]
    >>> pca(frames).shape[-1]
    16
    """

    def __init__(self, num_components=32):
        if not isinstance(num_components, (int, np.integer)) or num_components < 1:
            raise ValueError(f"`num_components` must be a positive int; received "
                             f"{num_components!r}.")
        self.num_components = int(num_components)
        self.mean = None
        self.components = None

    @staticmethod
    def _flatten(frames):
        frames = np.asarray(frames, np.float32)
        if frames.ndim < 3:
            raise ValueError(f"`frames` must be [..., H, W, C] images; received shape "
                             f"{frames.shape}.")
        return frames.reshape(frames.shape[:-3] + (-1,))

    def fit(self, frames):
        pixels = self._flatten(frames)
        pixels = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        if self.num_components > min(pixels.shape):
            raise ValueError(
                f"`num_components` ({self.num_components}) must be at most min(frames, "
                f"pixels) = {min(pixels.shape)}."
            )
        self.mean = pixels.mean(0)
        _, _, components = np.linalg.svd(pixels - self.mean, full_matrices=False)
        self.components = components[: self.num_components].astype(np.float32)
        self.mean = self.mean.astype(np.float32)
        return self

    def __call__(self, frames):
        if self.components is None:
            raise ValueError("PixelPCA is not fitted: call `fit(frames)` first.")
        pixels = self._flatten(frames)
        if pixels.shape[-1] != self.components.shape[1]:
            raise ValueError(
                f"`frames` must have {self.components.shape[1]} pixels per frame (the fitted "
                f"size); received shape {np.shape(frames)}."
            )
        return (pixels - self.mean) @ self.components.T
