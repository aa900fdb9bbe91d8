"""A thin layer over the `tokenizers` library: train locally, or load a local tokenizer.

Byte-level BPE (GPT-2, RoBERTa) and WordPiece (BERT) are trained on the embedded corpus or
the user's text in seconds. `from_dir` reads a Hugging Face tokenizer directory: its
`tokenizer.json`, or the files the original tokenizers ship, converted into the same
`tokenizers` pipeline as transformers builds from them, so ids and text are identical:

- a SentencePiece `spiece.model` (T5, mT5; needs the `sentencepiece` package),
- a byte-level BPE `vocab.json` + `merges.txt` (GPT-2; BART/RoBERTa with `<s> ... </s>`;
  CLIP, lower-cased, with `</w>` word ends and `<|startoftext|> ... <|endoftext|>`),
- a WordPiece `vocab.txt` (BERT).

Nothing is downloaded.
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
    "bos_token_id": ("<s>", "<|startoftext|>", "<|endoftext|>"),
    "eos_token_id": ("</s>", "<|endoftext|>"),
}

# The roles a tokenizer directory can name (tokenizer_config.json, special_tokens_map.json),
# each setting the matching `<role>_id` attribute.
SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                       "cls_token", "mask_token")

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# How `from_dir` builds a tokenizer from vocabulary files (a tokenizer.json is complete).
KINDS = ("auto", "sentencepiece", "wordpiece", "byte_level", "roberta", "clip")

# transformers' model types and tokenizer classes -> the kind of their vocabulary files.
_KIND_OF_MODEL_TYPE = {
    "t5": "sentencepiece", "mt5": "sentencepiece", "umt5": "sentencepiece",
    "bart": "roberta", "roberta": "roberta", "mbart": "sentencepiece",
    "clip": "clip", "clip_text_model": "clip",
    "gpt2": "byte_level", "bert": "wordpiece",
}
_KIND_OF_TOKENIZER_CLASS = {
    "T5Tokenizer": "sentencepiece", "T5TokenizerFast": "sentencepiece",
    "MT5Tokenizer": "sentencepiece", "MT5TokenizerFast": "sentencepiece",
    "BartTokenizer": "roberta", "BartTokenizerFast": "roberta",
    "RobertaTokenizer": "roberta", "RobertaTokenizerFast": "roberta",
    "CLIPTokenizer": "clip", "CLIPTokenizerFast": "clip",
    "GPT2Tokenizer": "byte_level", "GPT2TokenizerFast": "byte_level",
    "BertTokenizer": "wordpiece", "BertTokenizerFast": "wordpiece",
}

# CLIP's word splitting, as transformers' CLIPTokenizer (and the original CLIP's regex):
# its special tokens, English contractions, letter runs, single digits, other symbol runs.
CLIP_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+"
                r"|[\p{N}]|[^\s\p{L}\p{N}]+")

# SentencePiece piece types (sentencepiece_model.proto).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
_UNIGRAM = 1


def _library():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "keras_bigmodels.tokenizers needs the `tokenizers` package: "
            "pip install tokenizers"
        ) from None
    return tokenizers


def _sentencepiece_model_proto():
    """The `ModelProto` message class that reads a `.model` file (sentencepiece's own)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ImportError(
            "Reading a SentencePiece model (spiece.model of T5/mT5) needs the `sentencepiece` "
            "and `protobuf` packages: pip install 'keras-bigmodels[sentencepiece]'"
        ) from None
    return sentencepiece_model_pb2.ModelProto


class Tokenizer:
    """Text <-> token ids, wrapping a `tokenizers.Tokenizer`.

    Args:
        backend_tokenizer: a `tokenizers.Tokenizer`.
        special_tokens: optional dict from a role ("bos_token", "eos_token", "unk_token",
            "pad_token", "sep_token", "cls_token", "mask_token") to its token string, as a
            tokenizer directory's `special_tokens_map.json` names them; each sets
            `<role>_id`. A role not given is guessed from the usual token names
            ("</s>", "<pad>", "[CLS]", ...).

    Example:
    >>> tok = Tokenizer.train_bpe(["hello world", "hello there"], vocabulary_size=300)
    >>> tok.decode(tok.encode("hello world"))
    'hello world'
    """

    def __init__(self, backend_tokenizer, special_tokens=None):
        self.backend = backend_tokenizer
        self.special_tokens = _checked_special_tokens(backend_tokenizer, special_tokens)
        for attribute, candidates in SPECIAL_TOKEN_NAMES.items():
            role = attribute[:-len("_id")]
            if role in self.special_tokens:
                candidates = (self.special_tokens[role],)
            ids = [self.backend.token_to_id(t) for t in candidates]
            setattr(self, attribute, next((i for i in ids if i is not None), None))
        # CLIP's BPE marks the end of each word with a suffix ("</w>") that its byte-level
        # decoder leaves in the text; transformers' CLIPTokenizer turns each into a space
        # and strips the ends, and so does `decode`.
        self._end_of_word_suffix = getattr(self.backend.model, "end_of_word_suffix", None)

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
    def from_dir(cls, path, lowercase=True, kind="auto"):
        """A tokenizer from a local directory, as transformers would load it from there.

        `tokenizer.json` (the whole pipeline) is read when present; otherwise the
        vocabulary files: `spiece.model`, `vocab.txt`, or `vocab.json` + `merges.txt`.
        Special-token roles come from `tokenizer_config.json` / `special_tokens_map.json`
        when the directory has them.

        Args:
            path: the directory.
            lowercase: for a WordPiece `vocab.txt`: lowercase and strip accents first.
            kind: how vocabulary files are read: "auto" (from `tokenizer_config.json`'s
                `tokenizer_class` or `config.json`'s `model_type`, else the files and
                vocabulary themselves), "sentencepiece" (T5/mT5 `spiece.model`),
                "wordpiece" (BERT `vocab.txt`), "byte_level" (GPT-2), "roberta" (BART,
                RoBERTa: `<s> ... </s>`) or "clip" (CLIP's lower-cased BPE with `</w>`
                word ends and `<|startoftext|> ... <|endoftext|>`).

        Example:
        >>> tok = Tokenizer.train_bpe(["hello world", "hello there"], vocabulary_size=300)
        >>> import tempfile; folder = tempfile.mkdtemp(); tok.save(folder)
        >>> Tokenizer.from_dir(folder).encode("hello world") == tok.encode("hello world")
        True
        """
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}; received {kind!r}.")
        tk = _library()
        path = os.fspath(path)
        files = {name: os.path.join(path, name) for name in (
            "tokenizer.json", "spiece.model", "vocab.txt", "vocab.json", "merges.txt")}
        present = {name for name, file in files.items() if os.path.isfile(file)}
        special_tokens = _special_tokens_in(path)
        # tokenizer.json is the whole pipeline; an explicit kind asks for the vocabulary
        # files instead, where the directory has them.
        if "tokenizer.json" in present and (
                kind == "auto" or not _vocabulary_files_for(kind, present)):
            return cls(tk.Tokenizer.from_file(files["tokenizer.json"]), special_tokens)
        if kind == "auto":
            kind = _declared_kind(path)
            if not _vocabulary_files_for(kind, present):
                kind = ("sentencepiece" if "spiece.model" in present
                        else "wordpiece" if "vocab.txt" in present
                        else _bpe_kind(files["vocab.json"])
                        if {"vocab.json", "merges.txt"} <= present else None)
        if not _vocabulary_files_for(kind, present):
            raise ValueError(
                f"No tokenizer in `{path}`" + ("" if kind is None else f" for kind={kind!r}")
                + ": expected tokenizer.json, spiece.model, vocab.txt, or vocab.json + "
                "merges.txt.")
        if kind == "sentencepiece":
            config = _read_json(os.path.join(path, "tokenizer_config.json"))
            additional = (config.get("additional_special_tokens")
                          or config.get("extra_special_tokens") or [])
            return cls.from_sentencepiece(
                files["spiece.model"], extra_ids=config.get("extra_ids"),
                special_tokens=special_tokens,
                additional_special_tokens=[_token_content(t) for t in additional])
        if kind == "wordpiece":
            tokenizer = tk.Tokenizer(tk.models.WordPiece.from_file(files["vocab.txt"],
                                                                   unk_token="[UNK]"))
            tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=lowercase)
            tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
            tokenizer.decoder = tk.decoders.WordPiece()
            return cls(tokenizer, special_tokens)
        return cls.from_bpe_files(files["vocab.json"], files["merges.txt"], kind=kind,
                                  special_tokens=special_tokens)

    @classmethod
    def from_sentencepiece(cls, model_file, extra_ids=None, special_tokens=None,
                           additional_special_tokens=()):
        """T5/mT5's SentencePiece unigram model as transformers' `T5Tokenizer` reads it.

        The same pipeline as transformers (5.x) converts it to: the model's pieces and
        scores, then `extra_ids` sentinels `<extra_id_{extra_ids - 1}>` ... `<extra_id_0>`
        appended (so `<extra_id_0>` is the last id), the model's own normalization table,
        whitespace split with "▁" before every word, `</s>` appended by
        `add_special_tokens=True`. Control, unknown and sentinel pieces are special tokens,
        matched whole in raw text and dropped by `decode(skip_special_tokens=True)`;
        user-defined pieces (mT5's own sentinels) are matched whole but kept.

        Args:
            model_file: the `spiece.model` file.
            extra_ids: how many sentinels to append (a directory's tokenizer_config.json
                says); None: 100 as transformers does, or 0 when the model already has
                its sentinels (mT5's "▁<extra_id_0>", or a user-defined `<extra_id_0>`).
            special_tokens: roles as in `Tokenizer(...)`; defaults to the model's pad,
                end and unknown pieces.
            additional_special_tokens: more special tokens (a directory's
                tokenizer_config.json lists them); those the vocabulary lacks get new ids
                after the sentinels, in this order. As in transformers, a list that names
                sentinels makes only those special (the others stay plain pieces).

        Example:
        >>> tok = Tokenizer.from_sentencepiece("t5-small/spiece.model")  # doctest: +SKIP
        >>> tok.encode("Hello <extra_id_0>", add_special_tokens=True)  # doctest: +SKIP
        [8774, 32099, 1]
        """
        tk = _library()
        model = _sentencepiece_model_proto()()
        with open(os.fspath(model_file), "rb") as file:
            model.ParseFromString(file.read())
        trainer = model.trainer_spec
        if trainer.model_type != _UNIGRAM:
            raise ValueError(
                f"`model_file` must be a SentencePiece unigram model (T5, mT5); "
                f"{model_file} has model_type {trainer.model_type}.")
        pieces = [(piece.piece, piece.score) for piece in model.pieces]
        present = {piece for piece, _ in pieces}
        if extra_ids is None:
            # mT5's model already ends with its sentinels, as "▁<extra_id_99>" ...
            # "▁<extra_id_0>" (its tokenizer_config.json says extra_ids=0).
            extra_ids = 0 if {"<extra_id_0>", "▁<extra_id_0>"} & present else 100
        if not isinstance(extra_ids, int) or isinstance(extra_ids, bool) or extra_ids < 0:
            raise ValueError(f"`extra_ids` must be an int >= 0; received {extra_ids!r}.")
        sentinels = [f"<extra_id_{i}>" for i in range(extra_ids - 1, -1, -1)]
        tokenizer = tk.Tokenizer(tk.models.Unigram(
            pieces + [(token, 0.0) for token in sentinels], unk_id=trainer.unk_id,
            byte_fallback=False))
        charsmap = model.normalizer_spec.precompiled_charsmap
        if charsmap:
            tokenizer.normalizer = tk.normalizers.Precompiled(charsmap)
        # transformers' split: on any whitespace, then "▁" before every word (also after a
        # special token: "a<extra_id_0>." gives "▁." after the sentinel).
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.WhitespaceSplit(),
            tk.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ])
        tokenizer.decoder = tk.decoders.Metaspace(replacement="▁", prepend_scheme="always",
                                                  split=True)
        roles = {}
        for role, piece_id, piece in (("pad_token", trainer.pad_id, trainer.pad_piece),
                                      ("eos_token", trainer.eos_id, trainer.eos_piece),
                                      ("unk_token", trainer.unk_id, trainer.unk_piece)):
            if 0 <= piece_id < len(pieces):
                roles[role] = pieces[piece_id][0]
        roles.update(special_tokens or {})
        listed = list(additional_special_tokens)
        if not any("<extra_id_" in token for token in listed):
            listed += sentinels
        special = [piece.piece for piece in model.pieces
                   if piece.type in (_UNKNOWN, _CONTROL)]
        special += [token for token in (*listed, *roles.values()) if token not in special]
        tokenizer.add_special_tokens([tk.AddedToken(token, special=True, normalized=False)
                                      for token in special])
        user_defined = [piece.piece for piece in model.pieces if piece.type == _USER_DEFINED]
        tokenizer.add_tokens([tk.AddedToken(token, special=False, normalized=False)
                              for token in user_defined])
        eos = roles.get("eos_token")
        if eos is None:
            raise ValueError(f"`model_file` {model_file} has no end-of-sequence piece; "
                             "name one with special_tokens={'eos_token': ...}.")
        tokenizer.post_processor = tk.processors.TemplateProcessing(
            single=["$A", eos], pair=["$A", eos, "$B", eos],
            special_tokens=[(eos, tokenizer.token_to_id(eos))])
        return cls(tokenizer, roles)

    @classmethod
    def from_bpe_files(cls, vocab_file, merges_file, kind="byte_level", special_tokens=None):
        """A byte-level BPE `vocab.json` + `merges.txt` as transformers reads it.

        Args:
            vocab_file: the `vocab.json` file (token -> id).
            merges_file: the `merges.txt` file.
            kind: "byte_level" (GPT-2: no special tokens added), "roberta" (BART and
                RoBERTa's `BartTokenizer`/`RobertaTokenizer`: `<s> ... </s>`, `<pad>`,
                `<unk>`, `<mask>`), or "clip" (transformers' `CLIPTokenizer`: NFC,
                whitespace runs to one space, lowercase, CLIP's word regex, `</w>` word
                ends, `<|startoftext|> ... <|endoftext|>`, unknown and pad
                `<|endoftext|>`).
            special_tokens: roles as in `Tokenizer(...)`, replacing the kind's defaults.

        Example:
        >>> tok = Tokenizer.from_bpe_files("clip/vocab.json", "clip/merges.txt",
        ...                                kind="clip")  # doctest: +SKIP
        >>> tok.encode("A photo of a cat", add_special_tokens=True)  # doctest: +SKIP
        [49406, 320, 1125, 539, 320, 2368, 49407]
        """
        bpe_kinds = ("byte_level", "roberta", "clip")
        if kind not in bpe_kinds:
            raise ValueError(f"`kind` must be one of {bpe_kinds}; received {kind!r}.")
        tk = _library()
        vocabulary, merges = tk.models.BPE.read_file(os.fspath(vocab_file),
                                                     os.fspath(merges_file))
        if kind == "byte_level":
            tokenizer = tk.Tokenizer(tk.models.BPE(vocabulary, merges))
            tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = tk.decoders.ByteLevel()
            return cls(tokenizer, special_tokens)
        if kind == "roberta":
            roles = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                     "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                     "mask_token": "<mask>", **(special_tokens or {})}
            tokenizer = tk.Tokenizer(tk.models.BPE(
                vocabulary, merges, continuing_subword_prefix="", end_of_word_suffix="",
                fuse_unk=False))
            tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            roles = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                     "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                     **(special_tokens or {})}
            tokenizer = tk.Tokenizer(tk.models.BPE(
                vocabulary, merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                fuse_unk=False, unk_token=roles["unk_token"]))
            tokenizer.normalizer = tk.normalizers.Sequence([
                tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "),
                tk.normalizers.Lowercase()])
            tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
                tk.pre_tokenizers.Split(tk.Regex(CLIP_PATTERN), behavior="removed",
                                        invert=True),
                tk.pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tokenizer.decoder = tk.decoders.ByteLevel()
        tokens = list(dict.fromkeys(roles[role] for role in SPECIAL_TOKEN_ROLES
                                    if role in roles))
        # transformers appends a special token the vocabulary lacks (e.g. a vocab.json
        # without "<mask>") as a new id; so does the library here.
        tokenizer.add_special_tokens([tk.AddedToken(token, special=True, normalized=False)
                                      for token in tokens])
        start = "cls_token" if kind == "roberta" else "bos_token"
        end = "sep_token" if kind == "roberta" else "eos_token"
        tokenizer.post_processor = tk.processors.RobertaProcessing(
            (roles[end], tokenizer.token_to_id(roles[end])),
            (roles[start], tokenizer.token_to_id(roles[start])),
            trim_offsets=kind == "roberta", add_prefix_space=False)
        return cls(tokenizer, roles)

    def save(self, path):
        """Write `tokenizer.json` (and `special_tokens_map.json`) into the directory `path`."""
        os.makedirs(path, exist_ok=True)
        self.backend.save(os.path.join(path, "tokenizer.json"))
        if self.special_tokens:
            with open(os.path.join(path, "special_tokens_map.json"), "w") as file:
                json.dump(self.special_tokens, file, indent=2, ensure_ascii=False)

    def get_config(self):
        return {"tokenizer_json": self.backend.to_str(),
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_config(cls, config):
        return cls(_library().Tokenizer.from_str(config["tokenizer_json"]),
                   config.get("special_tokens"))

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
            texts = self.backend.decode_batch([list(map(int, r)) for r in ids],
                                              skip_special_tokens=skip_special_tokens)
            return [self._finish(text) for text in texts]
        return self._finish(self.backend.decode(list(map(int, ids)),
                                                skip_special_tokens=skip_special_tokens))

    def _finish(self, text):
        if self._end_of_word_suffix:
            return text.replace(self._end_of_word_suffix, " ").strip()
        return text

    def token_to_id(self, token):
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id):
        return self.backend.id_to_token(int(token_id))

    def __repr__(self):
        model = json.loads(self.backend.to_str())["model"]["type"]
        return f"Tokenizer({model}, vocabulary_size={self.vocabulary_size})"


def _read_json(file):
    if not os.path.isfile(file):
        return {}
    with open(file, encoding="utf-8") as handle:
        return json.load(handle)


def _token_content(token):
    """A token string from transformers' files: a string, or an AddedToken as a dict."""
    return token.get("content") if isinstance(token, dict) else token


def _special_tokens_in(path):
    """Special-token roles a directory names: tokenizer_config.json, then
    special_tokens_map.json (transformers' two files), as {role: token}."""
    roles = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        for role, value in _read_json(os.path.join(path, name)).items():
            if role in SPECIAL_TOKEN_ROLES:
                token = _token_content(value)
                if isinstance(token, str):
                    roles[role] = token
    return roles


def _checked_special_tokens(backend_tokenizer, special_tokens):
    """The roles whose token the vocabulary has (a directory may name one it lacks)."""
    special_tokens = dict(special_tokens or {})
    unknown = set(special_tokens) - set(SPECIAL_TOKEN_ROLES)
    if unknown:
        raise ValueError(f"`special_tokens` keys must be among {SPECIAL_TOKEN_ROLES}; "
                         f"received {sorted(unknown)}.")
    return {role: token for role, token in special_tokens.items()
            if backend_tokenizer.token_to_id(token) is not None}


def _declared_kind(path):
    """The kind a directory's tokenizer_config.json or config.json declares, else None."""
    tokenizer_class = _read_json(os.path.join(path, "tokenizer_config.json")).get(
        "tokenizer_class")
    if tokenizer_class in _KIND_OF_TOKENIZER_CLASS:
        return _KIND_OF_TOKENIZER_CLASS[tokenizer_class]
    config = _read_json(os.path.join(path, "config.json"))
    model_type = config.get("model_type")
    if model_type is None and isinstance(config.get("text_config"), dict):
        model_type = config["text_config"].get("model_type")
    return _KIND_OF_MODEL_TYPE.get(model_type)


def _vocabulary_files_for(kind, present):
    """Whether the files `kind` is built from are in the directory."""
    needs = {"sentencepiece": {"spiece.model"}, "wordpiece": {"vocab.txt"}}.get(
        kind, {"vocab.json", "merges.txt"})
    return kind not in (None, "auto") and needs <= present


def _bpe_kind(vocab_file):
    """A byte-level BPE vocabulary's kind from its tokens: CLIP's, RoBERTa's, or GPT-2's."""
    vocabulary = _read_json(vocab_file)
    if "<|startoftext|>" in vocabulary:
        return "clip"
    if "<s>" in vocabulary and "</s>" in vocabulary:
        return "roberta"
    return "byte_level"


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
