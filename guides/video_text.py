"""Video and language on moving digits: UniVL retrieval and captions, VideoBERT visual words.

Runs on any backend in a few minutes on 2 CPU cores:

    KERAS_BACKEND=jax python guides/video_text.py                 # embedded moving digits
    python guides/video_text.py --data features.npz              # your per-frame features
    python guides/video_text.py --tiny                           # a smoke run

The data are short videos of a handwritten digit moving left, right, up or down, captioned
"a seven moving left" (and three other templates), train and test built from disjoint
digit images (`keras_bigmodels.data.load_moving_digits`). Each frame becomes a fixed
feature vector, the role a pretrained video network's features (S3D in UniVL) play in the
papers: the magnitude of the frame's 2-D Fourier transform, which does not change when
the digit moves (its shape), the digit's centroid (where it is) and its change between
frames (where it goes). `--data` reads real per-frame features instead (`data.save_video_features` writes the `.npz`).

UniVL (Luo et al. 2020) is pretrained in the paper's two stages (the video-text joint
loss, then all five objectives with "enhanced video"), then fine-tuned to caption from the
video alone. It reports:

- text->video retrieval recall@1 and @5 on the test set in the joint space (a hit: a
  retrieved video shows the digit and direction the caption names), against chance;
- caption accuracy (the generated caption names the digit and the direction), against
  always writing the training set's most frequent caption.

VideoBERT (Sun et al. 2019) quantizes per-frame features into visual words (hierarchical
k-means; on the moving digits the features are the digit's appearance, cropped around its
centroid, its position and its motion, so that a word says what moves, where and which
way), trains one BERT on text, video and joint examples with the linguistic-visual
alignment head, and reports, each against a trivial baseline:

- masked visual-word accuracy against the most frequent word and copying the nearest
  visible frame's word, on all masked words and on those that differ from both
  neighbouring frames' words (where copying cannot be right);
- alignment accuracy of the [CLS] head on held-out caption-video pairs, half of them
  mismatched, against the majority label;
- zero-shot classification ("a [MASK] moving [MASK]") against the video-blind prior.

The numbers go to `<output>/video_text.json`.
"""

import math
import os
import sys
import time

import numpy as np

import keras

import keras_bigmodels as kbm
from keras_bigmodels.data.images import DIGIT_NAMES
from keras_bigmodels.models.univl import UniVLBackbone, UniVLPretrainer
from keras_bigmodels.objectives.univl import univl_batch
from keras_bigmodels.tokenizers import Tokenizer

import guide_cli

PARTS = ("univl", "videobert")
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # Tokenizer.train_wordpiece's special ids

# `--tiny`: seconds of training, still above the baselines (see the test).
TINY = dict(train_videos=320, test_videos=80, width=32, joint_epochs=6, all_epochs=6,
            caption_epochs=8, videobert_epochs=6, batch_size=32, learning_rate=3e-3,
            alignment_negatives=3, visual_levels=2, visual_branching=4)


def parse_args(argv=None):
    parser = guide_cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .npz of per-frame features and captions "
                        "(data.save_video_features); none: the embedded moving digits")
    parser.add_argument("--output", default="out", help="folder for the numbers")
    parser.add_argument("--output-json",
                        help="the numbers of the run (default: <output>/video_text.json)")
    parser.add_argument("--parts", default="univl,videobert",
                        help="comma list of univl, videobert")
    positive = guide_cli.positive_int
    parser.add_argument("--train-videos", type=positive, default=2000,
                        help="moving-digit training videos")
    parser.add_argument("--test-videos", type=positive, default=400,
                        help="moving-digit test videos")
    parser.add_argument("--frames", type=positive, default=8, help="frames per video")
    parser.add_argument("--width", type=positive, default=64,
                        help="hidden size of every Transformer (a multiple of 16)")
    parser.add_argument("--joint-epochs", type=positive, default=8,
                        help="UniVL stage one: the video-text joint loss alone")
    parser.add_argument("--all-epochs", type=positive, default=12,
                        help="UniVL stage two: all five objectives, enhanced video")
    parser.add_argument("--caption-epochs", type=positive, default=12,
                        help="UniVL caption fine-tuning from the video alone")
    parser.add_argument("--videobert-epochs", type=positive, default=30,
                        help="VideoBERT pretraining epochs")
    parser.add_argument("--batch-size", type=positive, default=32, help="training batch")
    parser.add_argument("--learning-rate", type=guide_cli.positive_float, default=1e-3,
                        help="AdamW")
    parser.add_argument("--alignment-negatives", type=positive, default=7,
                        help="videos each text is contrasted with in UniVL's alignment loss "
                        "(the paper: the whole batch)")
    parser.add_argument("--enhanced-video", type=guide_cli.fraction, default=0.15,
                        help="UniVL's probability of masking a whole text in stage two")
    parser.add_argument("--visual-levels", type=positive, default=3,
                        help="VideoBERT's hierarchical k-means depth (the paper: 4)")
    parser.add_argument("--visual-branching", type=positive, default=8,
                        help="clusters per k-means node (the paper: 12)")
    parser.add_argument("--text-mask-rate", type=guide_cli.fraction, default=0.15,
                        help="VideoBERT: share of the caption's words masked (visual words: "
                        "0.15); higher makes joint examples read more words off the video")
    parser.add_argument("--seed", type=guide_cli.non_negative_int, default=0,
                        help="data, initialization and masks")
    args = guide_cli.parse(parser, argv, TINY)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown or not args.parts:
        parser.error(f"argument --parts: entries must be among {', '.join(PARTS)}; "
                     f"got {unknown or 'nothing'}")
    if args.width % 16:
        parser.error(f"argument --width: must be a multiple of 16, got {args.width}")
    if args.frames < 2:
        parser.error(f"argument --frames: must be at least 2 to show motion, got {args.frames}")
    if args.visual_branching < 2:
        parser.error("argument --visual-branching: must be at least 2, got "
                     f"{args.visual_branching}")
    return args


# Data ---------------------------------------------------------------------------------
def frame_features(frames, frequencies=6):
    """[videos, frames, dim] features of [videos, frames, H, W, C] pixels: |FFT| (shape,
    unchanged by a translation on a black canvas) at the lowest frequencies, normalized
    by the frame's brightness, the intensity centroid (position) in [-1, 1], and its
    change from frame to frame (motion, as a video network's clip features carry it)."""
    gray = frames.mean(axis=-1)
    height, width = gray.shape[-2:]
    spectrum = np.abs(np.fft.rfft2(gray))
    rows = np.r_[0:frequencies, height - frequencies + 1:height]
    low = spectrum[..., rows, :frequencies]
    low = low / np.maximum(low[..., :1, :1], 1e-6)
    mass = np.maximum(gray.sum(axis=(-2, -1)), 1e-6)
    row = (gray.sum(axis=-1) * np.arange(height)).sum(-1) / mass
    column = (gray.sum(axis=-2) * np.arange(width)).sum(-1) / mass
    centroid = np.stack([2 * row / (height - 1) - 1, 2 * column / (width - 1) - 1], axis=-1)
    motion = np.gradient(centroid, axis=1)  # central differences, one-sided at the ends
    shape = low.reshape(low.shape[:2] + (-1,))
    # Position and motion repeated, so each weighs about as much as shape after scaling.
    return np.concatenate([shape, np.repeat(centroid, 8, axis=-1),
                           np.repeat(motion, 8, axis=-1)], axis=-1).astype("float32")


def load_data(args):
    """dict of features/frame masks/captions per split, and `keys` (what a caption must
    name: (digit, direction) on moving digits, the caption itself for --data)."""
    if args.data:
        data = kbm.data.load_video_features(args.data, seed=args.seed)
        out = {}
        for split in ("train", "test"):
            out[f"features_{split}"] = data[f"features_{split}"]
            out[f"frame_mask_{split}"] = data[f"frame_mask_{split}"].astype("int32")
            out[f"captions_{split}"] = data[f"captions_{split}"]
            out[f"keys_{split}"] = list(data[f"captions_{split}"])
        out["labels"] = None
        return out
    data = kbm.data.load_moving_digits(num_train=args.train_videos, num_test=args.test_videos,
                                       num_frames=args.frames, seed=args.seed)
    out = {"labels": {"digit_names": list(DIGIT_NAMES),
                      "direction_names": data["direction_names"]}}
    features = {split: frame_features(data[f"frames_{split}"]) for split in ("train", "test")}
    # Standardized with the training statistics.
    mean = features["train"].mean(axis=(0, 1))
    std = features["train"].std(axis=(0, 1)) + 1e-6
    for split in ("train", "test"):
        out[f"features_{split}"] = (features[split] - mean) / std
        out[f"frame_mask_{split}"] = np.ones(features[split].shape[:2], "int32")
        out[f"captions_{split}"] = data[f"captions_{split}"]
        out[f"keys_{split}"] = list(zip(data[f"digits_{split}"].tolist(),
                                        data[f"directions_{split}"].tolist()))
    return out


def encode_captions(tokenizer, captions, length):
    """`[CLS] words [SEP]` rows right-padded to `length`, and their padding mask."""
    rows = tokenizer.encode(list(captions))
    ids = np.zeros((len(rows), length), "int32")
    for i, row in enumerate(rows):
        row = [CLS] + list(row)[:length - 2] + [SEP]
        ids[i, :len(row)] = row
    return ids, (ids != PAD).astype("int32")


def caption_key(text, labels):
    """What a generated caption names: (digit, direction) indices, or the text itself."""
    if labels is None:
        return text.strip()
    words = text.replace("-", " - ").split()
    digit = next((labels["digit_names"].index(w) for w in words
                  if w in labels["digit_names"]), None)
    direction = next((labels["direction_names"].index(w) for w in words
                      if w in labels["direction_names"]), None)
    return (digit, direction)


# UniVL --------------------------------------------------------------------------------
class UniVLBatches(keras.utils.PyDataset):
    """Shuffled batches of `univl_batch` inputs with fresh masks each time they are drawn.

    `empty_text`: the encoders' text is `[CLS] [SEP]` (captioning from the video alone,
    as the fine-tuning of the paper's video-only captioning); the decoder still reads and
    predicts the caption.
    """

    def __init__(self, token_ids, padding_mask, features, frame_mask, batch_size, seed,
                 vocabulary_size, whole_text_mask_rate=0.0, empty_text=False):
        super().__init__()
        self.arrays = (token_ids, padding_mask, features, frame_mask)
        self.batch_size = batch_size
        self.vocabulary_size = vocabulary_size
        self.whole_text_mask_rate = whole_text_mask_rate
        self.empty_text = empty_text
        self.seed = seed
        self.epoch = 0
        self.order = np.random.default_rng([seed, 0]).permutation(len(token_ids))

    def __len__(self):
        # Whole batches only: one compiled step shape.
        return max(1, len(self.order) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        token_ids, padding_mask, features, frame_mask = (a[rows] for a in self.arrays)
        batch = univl_batch(token_ids, padding_mask, features, frame_mask,
                            vocabulary_size=self.vocabulary_size, mask_token_id=MASK,
                            start_token_id=CLS, end_token_id=SEP,
                            special_token_ids=(PAD, UNK, CLS, SEP, MASK),
                            whole_text_mask_rate=self.whole_text_mask_rate,
                            rng=np.random.default_rng([self.seed, self.epoch, index]))
        if self.empty_text:
            empty = np.zeros_like(batch["masked_token_ids"])
            empty[:, :2] = (CLS, SEP)
            batch["masked_token_ids"] = empty
            batch["padding_mask"] = (empty != PAD).astype("int32")
        return batch

    def on_epoch_end(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(
            len(self.order))


def retrieval(text_vectors, video_vectors, query_keys, video_keys):
    """Text->video recall@1/5 (a hit: a top video with the query's key) and chance: with
    r relevant videos among n, a random top-k misses them all with C(n-r, k)/C(n, k)."""
    scores = text_vectors @ video_vectors.T
    ranking = np.argsort(-scores, axis=1)
    video_keys = np.array([hash(k) for k in video_keys])
    query_keys = np.array([hash(k) for k in query_keys])
    relevant = video_keys[None, :] == query_keys[:, None]
    results = {}
    count = len(video_keys)
    for k in (1, 5):
        top = min(k, count)
        hits = np.take_along_axis(relevant, ranking[:, :top], axis=1).any(axis=1)
        chance = [1 - math.comb(count - r, top) / math.comb(count, top)
                  for r in relevant.sum(1)]
        results[f"recall_at_{k}"] = float(hits.mean())
        results[f"chance_recall_at_{k}"] = float(np.mean(chance))
    return results


def run_univl(args, data, tokenizer, verbose):
    vocabulary = tokenizer.vocabulary_size
    length = 2 + max(len(r) for r in tokenizer.encode(data["captions_train"]))
    token_ids, padding_mask = encode_captions(tokenizer, data["captions_train"], length)
    features, frame_mask = data["features_train"], data["frame_mask_train"]
    width = args.width
    backbone = UniVLBackbone(
        vocabulary_size=vocabulary, video_feature_dim=features.shape[-1],
        num_text_layers=2 if not args.tiny else 1, num_video_layers=2 if not args.tiny else 1,
        num_cross_layers=1, num_decoder_layers=1, num_heads=max(2, width // 16),
        hidden_dim=width, intermediate_dim=2 * width, max_sequence_length=max(16, length),
        max_frames=features.shape[1], dropout=0.1 if not args.tiny else 0.0)
    task = UniVLPretrainer(backbone, objectives="joint",
                           alignment_negatives=min(args.alignment_negatives,
                                                   args.batch_size - 1),
                           tokenizer=tokenizer, decoder_start_token_id=CLS,
                           eos_token_id=SEP, pad_token_id=PAD)
    task.compile(learning_rate=args.learning_rate)

    def batches(seed, **kwargs):
        return UniVLBatches(token_ids, padding_mask, features, frame_mask, args.batch_size,
                            seed, vocabulary, **kwargs)

    history = {}
    start = time.perf_counter()
    stages = (("joint", "joint", args.joint_epochs, {}),
              ("all", "all", args.all_epochs, {"whole_text_mask_rate": args.enhanced_video}),
              ("caption", ["caption"], args.caption_epochs, {"empty_text": True}))
    results = {}
    for index, (stage, objectives, epochs, kwargs) in enumerate(stages):
        task.set_objectives(objectives)
        fitted = task.fit(batches(args.seed + index, **kwargs), epochs=epochs,
                          verbose=2 if verbose else 0)
        history[stage] = {k: [float(v) for v in values]
                          for k, values in fitted.history.items()}
        if stage == "all":
            # Retrieval in the joint space, before the caption fine-tuning.
            test_ids, test_mask = encode_captions(tokenizer, data["captions_test"], length)
            results["retrieval"] = retrieval(
                task.text_embeddings(test_ids, test_mask),
                task.video_embeddings(data["features_test"], data["frame_mask_test"]),
                data["keys_test"], data["keys_test"])
    seconds = time.perf_counter() - start

    # From the video alone (the empty text), greedily, all test videos in one batch.
    captions = task.generate(data["features_test"], data["frame_mask_test"],
                             max_new_tokens=length - 1)
    labels = data["labels"]
    generated = [caption_key(c, labels) for c in captions]
    truth = data["keys_test"]
    correct = [g == t for g, t in zip(generated, truth)]
    train_keys = [str(k) for k in data["keys_train"]]
    most_frequent = max(set(train_keys), key=train_keys.count)
    baseline = float(np.mean([str(t) == most_frequent for t in truth]))
    caption_results = {"accuracy": float(np.mean(correct)),
                       "most_frequent_caption_accuracy": baseline,
                       "examples": [{"generated": c, "reference": r}
                                    for c, r in list(zip(captions, data["captions_test"]))[:8]]}
    if labels is not None:
        caption_results["digit_accuracy"] = float(np.mean(
            [g[0] == t[0] for g, t in zip(generated, truth)]))
        caption_results["direction_accuracy"] = float(np.mean(
            [g[1] == t[1] for g, t in zip(generated, truth)]))
    results.update(captions=caption_results, history=history, seconds=seconds,
                   parameters=int(task.count_params()))
    return results


# VideoBERT ----------------------------------------------------------------------------
def digit_crops(frames, size=10):
    """The pixels of a `size` x `size` window centred on each frame's intensity centroid
    (what the digit looks like wherever it is), [videos, frames, size * size], and the
    centroid itself as (row, column) in [0, 1], [videos, frames, 2]."""
    gray = frames.mean(axis=-1)
    count, length, height, width = gray.shape
    mass = np.maximum(gray.sum(axis=(-2, -1)), 1e-6)
    row = (gray.sum(axis=-1) * np.arange(height)).sum(-1) / mass
    column = (gray.sum(axis=-2) * np.arange(width)).sum(-1) / mass
    padded = np.pad(gray, ((0, 0), (0, 0), (size, size), (size, size)))
    top = np.rint(row).astype(int) + size - size // 2
    left = np.rint(column).astype(int) + size - size // 2
    crops = np.empty((count, length, size, size), "float32")
    for video in range(count):
        for frame in range(length):
            r, c = top[video, frame], left[video, frame]
            crops[video, frame] = padded[video, frame, r:r + size, c:c + size]
    centroid = np.stack([row / (height - 1), column / (width - 1)], axis=-1)
    return crops.reshape(count, length, -1), centroid.astype("float32")


def visual_word_features(frames, components=16, weights=(1.5, 1.0, 1.0)):
    """Per-frame features whose visual words say what moves, where and which way.

    Three groups, each scaled to the same total variance on the training frames (times
    its weight), so that no group drowns the others in k-means' distances: the first
    `components` principal components of the digit crop (`digit_crops`), the centroid,
    and its change between frames. The guide's `frame_features` carry the digit's shape
    as |FFT| magnitudes, which k-means splits on before anything else: the words then
    stay put for a whole video and name the digit poorly.

    Args:
        frames: dict split -> [videos, frames, H, W, C] pixels ("train" fits the PCA).
        components: principal components of the crop.
        weights: of the appearance, position and motion groups.

    Returns:
        dict split -> float32 [videos, frames, components + 4].
    """
    groups = {}
    for split, pixels in frames.items():
        crops, centroid = digit_crops(pixels)
        groups[split] = [crops, centroid, np.gradient(centroid, axis=1)]
    train_crops = groups["train"][0].reshape(-1, groups["train"][0].shape[-1])
    mean = train_crops.mean(0)
    _, _, basis = np.linalg.svd(train_crops - mean, full_matrices=False)
    for split in groups:
        groups[split][0] = (groups[split][0] - mean) @ basis[:components].T
    scales = [np.sqrt(g.reshape(-1, g.shape[-1]).var(0).sum()) + 1e-6 for g in groups["train"]]
    return {split: np.concatenate([g / s * w for g, s, w in zip(parts, scales, weights)],
                                  axis=-1).astype("float32")
            for split, parts in groups.items()}


def alignment_accuracy(pretrainer, text_ids, visual_ids, keys, pack, seed):
    """Held-out linguistic-visual alignment: each test caption beside its own video or
    (half of them) a video of another (digit, direction), against the majority label."""
    from keras_bigmodels.objectives.video_text import video_text_examples

    pairs = video_text_examples(text_ids, visual_ids, kinds=("joint",), pair_keys=keys,
                                rng=seed, **pack)
    labels = pairs["alignment_labels"]
    predicted = pretrainer.alignment_probabilities(pairs) > 0.5
    return {"accuracy": float(np.mean(predicted == labels)),
            "majority_baseline": float(max(labels.mean(), 1 - labels.mean())),
            "count": int(len(labels))}


def run_videobert(args, data, tokenizer, verbose):
    from keras_bigmodels.models.videobert import (VideoBERTBackbone, VideoBERTPretrainer,
                                                  VideoBERTPretrainingDataset, VideoTokenizer,
                                                  evaluate_masked_visual_prediction,
                                                  zero_shot_classify)
    from keras_bigmodels.objectives.video_text import video_text_examples

    # One joint vocabulary: the word pieces, the bridge token [>], then the visual words.
    bridge = tokenizer.vocabulary_size
    text_vocabulary = bridge + 1
    visual = VideoTokenizer(num_levels=args.visual_levels, branching_factor=args.visual_branching,
                            token_offset=text_vocabulary, seed=args.seed)
    if data["labels"] is not None:
        # The same videos again (seeded), as pixels: the words read the digit's crop.
        videos = kbm.data.load_moving_digits(num_train=args.train_videos,
                                             num_test=args.test_videos,
                                             num_frames=args.frames, seed=args.seed)
        features = visual_word_features({split: videos[f"frames_{split}"]
                                         for split in ("train", "test")})
    else:
        features = {split: data[f"features_{split}"] for split in ("train", "test")}
    masks = {split: data[f"frame_mask_{split}"].astype(bool) for split in ("train", "test")}
    visual.fit(features["train"][masks["train"]])
    visual_ids = {split: visual.encode(features[split]) for split in ("train", "test")}
    text_ids = {split: [list(r) for r in tokenizer.encode(data[f"captions_{split}"])]
                for split in ("train", "test")}
    max_text = max(len(r) for r in text_ids["train"] + text_ids["test"])
    frames = features["train"].shape[1]
    keys = {split: [hash(k) for k in data[f"keys_{split}"]] for split in ("train", "test")}
    pack = dict(cls_token_id=CLS, sep_token_id=SEP, bridge_token_id=bridge,
                max_text_length=max_text, max_visual_length=frames, pad_token_id=PAD)
    examples = video_text_examples(text_ids["train"], visual_ids["train"],
                                   visual_mask=masks["train"], pair_keys=keys["train"],
                                   rng=args.seed, **pack)
    dataset = VideoBERTPretrainingDataset(
        examples, batch_size=args.batch_size, seed=args.seed,
        text_vocabulary_size=text_vocabulary, visual_vocabulary_size=visual.vocabulary_size,
        mask_token_id=MASK, special_token_ids=(PAD, UNK, CLS, SEP, bridge),
        text_mask_rate=args.text_mask_rate)
    width = args.width
    backbone = VideoBERTBackbone(
        text_vocabulary_size=text_vocabulary, visual_vocabulary_size=visual.vocabulary_size,
        num_layers=2, num_heads=max(2, width // 16), hidden_dim=width,
        intermediate_dim=2 * width, max_sequence_length=max_text + frames + 3,
        dropout=0.1 if not args.tiny else 0.0)
    pretrainer = VideoBERTPretrainer(backbone)
    pretrainer.compile(learning_rate=args.learning_rate)
    start = time.perf_counter()
    fitted = pretrainer.fit(dataset, epochs=args.videobert_epochs, verbose=2 if verbose else 0)
    seconds = time.perf_counter() - start

    # Four masks per video: enough masked words that differ from their neighbours.
    common = dict(text_vocabulary_size=text_vocabulary, mask_token_id=MASK,
                  reference_visual_ids=visual_ids["train"], seed=args.seed, rounds=4, **pack)
    results = {
        "visual_words": visual.vocabulary_size,
        "visual_words_used_in_training": int(len(np.unique(visual_ids["train"]))),
        "neighbouring_frames_share_their_word": float(np.mean(
            visual_ids["test"][:, 1:] == visual_ids["test"][:, :-1])),
        "masked_visual_words": evaluate_masked_visual_prediction(
            pretrainer, visual_ids["test"], visual_mask=masks["test"], **common),
        "masked_visual_words_with_text": evaluate_masked_visual_prediction(
            pretrainer, visual_ids["test"], text_ids["test"], visual_mask=masks["test"],
            **common),
        "alignment": alignment_accuracy(pretrainer, text_ids["test"], visual_ids["test"],
                                        keys["test"], pack, args.seed + 1),
        "history": {k: [float(v) for v in values] for k, values in fitted.history.items()},
        "seconds": seconds,
        "parameters": int(pretrainer.count_params()),
    }
    labels = data["labels"]
    if labels is not None:
        # Zero-shot: fill "a [MASK] moving [MASK]" with a digit and a direction word.
        template = [tokenizer.token_to_id("a"), MASK, tokenizer.token_to_id("moving"), MASK]
        candidates = [[tokenizer.token_to_id(w) for w in labels["digit_names"]],
                      [tokenizer.token_to_id(w) for w in labels["direction_names"]]]
        if all(t is not None for t in template) and all(
                c is not None for group in candidates for c in group):
            zero_shot = dict(mask_token_id=MASK, **pack)
            predictions, _ = zero_shot_classify(pretrainer, template, candidates,
                                                visual_ids["test"], visual_mask=masks["test"],
                                                **zero_shot)
            prior, _ = zero_shot_classify(pretrainer, template, candidates, None,
                                          num_examples=len(visual_ids["test"]), **zero_shot)
            truth = np.array(data["keys_test"])
            results["zero_shot"] = {
                "accuracy": float(np.mean(np.all(predictions == truth, axis=1))),
                "digit_accuracy": float(np.mean(predictions[:, 0] == truth[:, 0])),
                "direction_accuracy": float(np.mean(predictions[:, 1] == truth[:, 1])),
                "video_blind_prior_accuracy": float(np.mean(np.all(prior == truth, axis=1))),
                "video_blind_prior_digit_accuracy": float(np.mean(prior[:, 0] == truth[:, 0])),
                "video_blind_prior_direction_accuracy": float(np.mean(
                    prior[:, 1] == truth[:, 1])),
            }
    return results


@guide_cli.runs_without_tensorflow
def main(argv=None):
    args = parse_args(argv)
    # Opt-in process tuning (malloc, XLA:CPU flags); before the first computation.
    kbm.runtime.tune_cpu()
    guide_cli.set_random_seed(args.seed)
    data = load_data(args)
    tokenizer = Tokenizer.train_wordpiece(data["captions_train"], 512)
    verbose = not args.tiny
    print(f"backend {keras.backend.backend()}: {len(data['captions_train'])} training and "
          f"{len(data['captions_test'])} test videos of {data['features_train'].shape[1]} "
          f"frames x {data['features_train'].shape[2]} features; "
          f"{tokenizer.vocabulary_size} word pieces")
    summary = {"command": ["guides/video_text.py", *(sys.argv[1:] if argv is None else argv)],
               "backend": keras.backend.backend(), "arguments": vars(args)}
    if "univl" in args.parts:
        summary["univl"] = run_univl(args, data, tokenizer, verbose)
        r, c = summary["univl"]["retrieval"], summary["univl"]["captions"]
        print(f"UniVL: text->video recall@1 {r['recall_at_1']:.1%} (chance "
              f"{r['chance_recall_at_1']:.1%}), recall@5 {r['recall_at_5']:.1%} (chance "
              f"{r['chance_recall_at_5']:.1%}); captions right {c['accuracy']:.1%} (most "
              f"frequent caption {c['most_frequent_caption_accuracy']:.1%})")
    if "videobert" in args.parts:
        summary["videobert"] = run_videobert(args, data, tokenizer, verbose)
        for name, m in (("all", summary["videobert"]["masked_visual_words"]),
                        ("changed", summary["videobert"]["masked_visual_words"]["changed"])):
            if m["count"]:
                print(f"VideoBERT: masked visual words ({name}, {m['count']}) right "
                      f"{m['accuracy']:.1%} (most frequent word "
                      f"{m['most_frequent_baseline']:.1%}, copy a neighbour "
                      f"{m['copy_neighbor_baseline']:.1%})")
        a = summary["videobert"]["alignment"]
        print(f"VideoBERT: text-video alignment on [CLS] {a['accuracy']:.1%} (majority label "
              f"{a['majority_baseline']:.1%})")
        if "zero_shot" in summary["videobert"]:
            z = summary["videobert"]["zero_shot"]
            print(f"VideoBERT zero-shot 'a [MASK] moving [MASK]': {z['accuracy']:.1%} "
                  f"(video-blind prior {z['video_blind_prior_accuracy']:.1%})")
    os.makedirs(args.output, exist_ok=True)
    guide_cli.write_json(args.output_json or os.path.join(args.output, "video_text.json"),
                         summary)
    return summary


if __name__ == "__main__":
    main()
