"""A thin layer over the `tokenizers` library: train locally, or load a local tokenizer.

Byte-level BPE (GPT-2, RoBERTa) and WordPiece (BERT) are trained on the embedded corpus or
the user's text in seconds; `from_dir` reads `tokenizer.json`, a WordPiece `vocab.txt`, or
a byte-level `vocab.json` + `merges.txt`. Nothing is downloaded.
"""

import collections
import json
import os

SPECIAL_TOKEN_NAMES = {
    "pad_token_id": ("[PAD]", "<pad>"),
    "unk_token_id": ("[UNK]", "<unk>"),
    "cls_token_id": ("[CLS]", "<s>"),
    "sep_token_id": ("[SEP]", "</s>"),
    "mask_token_id": ("[MASK]", "<mask>"),
    "bos_token_id": ("<s>", "<|endoftext|>"),
    "eos_token_id": ("</s>", "<|endoftext|>"),
}

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _library():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "keras_bigmodels.tokenizers needs the `tokenizers` package: "
            "pip install tokenizers"
        ) from None
    return tokenizers


class Tokenizer:
    """Text <-> token ids, wrapping a `tokenizers.Tokenizer`.

    Example:
    >>> tok = Tokenizer.train_bpe(["hello world", "hello there"], vocabulary_size=300)
    >>> tok.decode(tok.encode("hello world"))
    'hello world'
    """

    def __init__(self, backend_tokenizer):
        self.backend = backend_tokenizer
        for attribute, candidates in SPECIAL_TOKEN_NAMES.items():
            ids = [self.backend.token_to_id(t) for t in candidates]
            setattr(self, attribute, next((i for i in ids if i is not None), None))

    # Training -----------------------------------------------------------------------
    @classmethod
    def train_bpe(cls, texts, vocabulary_size, special_tokens=("<|endoftext|>",),
                  min_frequency=2):
        """Byte-level BPE (GPT-2 style: no unknown tokens, spaces kept as 'Ġ')."""
        tk = _library()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocabulary_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(_as_iterator(texts), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def train_wordpiece(cls, texts, vocabulary_size, lowercase=True,
                        special_tokens=WORDPIECE_SPECIALS):
        """WordPiece as in BERT: [PAD]=0, [UNK], [CLS], [SEP], [MASK], '##' continuations.

        Deterministic: the same texts give the same vocabulary and ids in every process.
        The `tokenizers` WordPiece trainer is not: it numbers the '##' continuation
        pieces in the iteration order of a randomly seeded hash map, and merges of equal
        frequency are ordered by those numbers, so every run picks different pieces (see
        `_train_wordpiece_vocabulary`).

        Args:
            texts: an iterable of strings (or of documents given as lists of sentences).
            vocabulary_size: the size of the vocabulary, special tokens and alphabet
                included.
            lowercase: lowercase and strip accents first (BERT "uncased").
            special_tokens: the special tokens, given the first ids in this order.

        Example:
        >>> tok = Tokenizer.train_wordpiece(["hello world", "hello there"], 60)
        >>> tok.decode(tok.encode("hello world"))
        'hello world'
        """
        tk = _library()
        normalizer = tk.normalizers.BertNormalizer(lowercase=lowercase)
        pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        word_counts = collections.Counter()
        for text in _as_iterator(texts):
            words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            word_counts.update(word for word, _ in words)
        vocabulary = _train_wordpiece_vocabulary(word_counts, vocabulary_size,
                                                 list(special_tokens))
        tokenizer = tk.Tokenizer(tk.models.WordPiece(vocabulary, unk_token="[UNK]"))
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = pre_tokenizer
        tokenizer.decoder = tk.decoders.WordPiece()
        # As the library's trainer does: special tokens are matched whole in raw text.
        tokenizer.add_special_tokens(list(special_tokens))
        return cls(tokenizer)

    # Loading and saving -------------------------------------------------------------
    @classmethod
    def from_dir(cls, path, lowercase=True):
        """Load `tokenizer.json`, or `vocab.txt` (WordPiece), or `vocab.json` + `merges.txt`."""
        tk = _library()
        path = os.fspath(path)
        json_file = os.path.join(path, "tokenizer.json")
        vocab_txt = os.path.join(path, "vocab.txt")
        vocab_json = os.path.join(path, "vocab.json")
        merges = os.path.join(path, "merges.txt")
        if os.path.isfile(json_file):
            return cls(tk.Tokenizer.from_file(json_file))
        if os.path.isfile(vocab_txt):
            tokenizer = tk.Tokenizer(tk.models.WordPiece.from_file(vocab_txt, unk_token="[UNK]"))
            tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=lowercase)
            tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
            tokenizer.decoder = tk.decoders.WordPiece()
            return cls(tokenizer)
        if os.path.isfile(vocab_json) and os.path.isfile(merges):
            tokenizer = tk.Tokenizer(tk.models.BPE.from_file(vocab_json, merges))
            tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = tk.decoders.ByteLevel()
            return cls(tokenizer)
        raise ValueError(
            f"No tokenizer in `{path}`: expected tokenizer.json, vocab.txt, or vocab.json + "
            "merges.txt."
        )

    def save(self, path):
        os.makedirs(path, exist_ok=True)
        self.backend.save(os.path.join(path, "tokenizer.json"))

    def get_config(self):
        return {"tokenizer_json": self.backend.to_str()}

    @classmethod
    def from_config(cls, config):
        return cls(_library().Tokenizer.from_str(config["tokenizer_json"]))

    # Use ----------------------------------------------------------------------------
    @property
    def vocabulary_size(self):
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text, add_special_tokens=False):
        """Ids of a string, or a list of id lists for a list of strings."""
        if isinstance(text, str):
            return self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
            raise ValueError("`text` must be a string or a list of strings.")
        encodings = self.backend.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids, skip_special_tokens=True):
        """A string from ids, or a list of strings from a batch of id lists."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        if len(ids) and isinstance(ids[0], (list, tuple)):
            return self.backend.decode_batch([list(map(int, r)) for r in ids],
                                             skip_special_tokens=skip_special_tokens)
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id):
        return self.backend.id_to_token(int(token_id))

    def __repr__(self):
        model = json.loads(self.backend.to_str())["model"]["type"]
        return f"Tokenizer({model}, vocabulary_size={self.vocabulary_size})"


def _as_iterator(texts):
    if isinstance(texts, str):
        raise ValueError("`texts` must be an iterable of strings, not a single string.")
    for text in texts:
        if isinstance(text, (list, tuple)):  # a document given as sentences
            yield " ".join(text)
        else:
            yield text


# Supplementary Private Use Areas A and B: code points no text is expected to use, each a
# single character to the trainer.
_PRIVATE_USE = (range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))


def _train_wordpiece_vocabulary(word_counts, vocabulary_size, special_tokens):
    """WordPiece vocabulary (token -> id) from word counts, the same in every process.

    The library's BPE trainer is deterministic when every symbol it starts from is a
    single character: the alphabet is numbered in code-point order and merges of equal
    frequency go to the lowest ids. Only its '##x' continuation symbols are numbered in
    hash-map order. So each non-initial character is written as its own private-use
    character (one per distinct character), the BPE trainer runs without a prefix, and
    the pieces are mapped back: a piece starting with such a character is '##' + the rest.
    Merging 'a' + '##b' -> 'ab' and '##a' + '##b' -> '##ab' is exactly what the
    WordPiece trainer does.
    """
    tk = _library()
    characters = sorted({c for word in word_counts for c in word})
    used = set(characters)
    free = (chr(c) for area in _PRIVATE_USE for c in area if chr(c) not in used)
    continuation = {}
    for character in characters:
        marker = next(free, None)
        if marker is None:
            raise ValueError("`texts` use too many distinct characters to train WordPiece.")
        continuation[character] = marker
    original = {marker: character for character, marker in continuation.items()}

    def encoded(word):
        return word[0] + "".join(continuation[c] for c in word[1:])

    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocabulary_size, special_tokens=special_tokens, show_progress=False,
        # Every character is a token of its own even where it only continues words, as
        # with the WordPiece trainer.
        initial_alphabet=characters)
    helper = tk.Tokenizer(tk.models.BPE())
    helper.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
    helper.train_from_iterator(
        (" ".join([encoded(word)] * count) for word, count in word_counts.items()),
        trainer=trainer)

    specials = set(special_tokens)
    vocabulary = {}
    for piece, _ in sorted(helper.get_vocab().items(), key=lambda item: item[1]):
        if piece not in specials:
            if piece[0] in original:
                piece = "##" + "".join(original[c] for c in piece)
            else:
                piece = "".join(original.get(c, c) for c in piece)
        # Distinct pieces stay distinct; setdefault only keeps the ids dense regardless.
        vocabulary.setdefault(piece, len(vocabulary))
    return vocabulary
