import json
import os
import subprocess
import sys

import pytest

from keras_bigmodels import data
from keras_bigmodels.tokenizers import WORDPIECE_SPECIALS, Tokenizer

# 40 documents and 500 pieces: enough merges of equal frequency that the `tokenizers`
# WordPiece trainer gives a different vocabulary on every run (5 of 5 measured).
DOCUMENT_COUNT, VOCABULARY_SIZE = 40, 500

TRAIN_AND_PRINT = """
import json, sys
from keras_bigmodels import data
from keras_bigmodels.tokenizers import Tokenizer
texts = [" ".join(d) for d in data.load_text("train")[:{count}]]
tokenizer = getattr(Tokenizer, "train_" + sys.argv[1])(texts, vocabulary_size={size})
print(json.dumps([sorted(tokenizer.backend.get_vocab().items()), tokenizer.encode(texts)]))
"""


def corpus():
    return [" ".join(d) for d in data.load_text("train")[:DOCUMENT_COUNT]]


def trained(kind, texts):
    tokenizer = getattr(Tokenizer, "train_" + kind)(texts, vocabulary_size=VOCABULARY_SIZE)
    return [sorted(tokenizer.backend.get_vocab().items()), tokenizer.encode(texts)]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_deterministic_within_a_process(kind):
    texts = corpus()
    first = trained(kind, texts)
    assert len(first[0]) == VOCABULARY_SIZE
    for _ in range(2):
        assert trained(kind, texts) == first


@pytest.mark.one_backend  # Python and the `tokenizers` library only
@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_deterministic_across_processes(kind):
    expected = json.loads(json.dumps(trained(kind, corpus())))
    script = TRAIN_AND_PRINT.format(count=DOCUMENT_COUNT, size=VOCABULARY_SIZE)
    environment = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", script, kind], capture_output=True,
                                text=True, env=environment, timeout=300, check=True)
        assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_wordpiece_is_laid_out_as_the_library_trains_it():
    tokenizers = pytest.importorskip("tokenizers")
    texts = corpus()
    ours = Tokenizer.train_wordpiece(texts, vocabulary_size=VOCABULARY_SIZE)
    reference = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    reference.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    reference.decoder = tokenizers.decoders.WordPiece()
    reference.train_from_iterator(texts, trainer=tokenizers.trainers.WordPieceTrainer(
        vocab_size=VOCABULARY_SIZE, special_tokens=list(WORDPIECE_SPECIALS),
        show_progress=False))

    ours_json, reference_json = json.loads(ours.backend.to_str()), json.loads(reference.to_str())
    ours_vocabulary = ours_json["model"].pop("vocab")
    reference_vocabulary = reference_json["model"].pop("vocab")
    # Same model options, normalizer, pre-tokenizer, decoder and special (added) tokens.
    assert ours_json == reference_json
    assert [ours_vocabulary[t] for t in WORDPIECE_SPECIALS] == [0, 1, 2, 3, 4]
    assert sorted(ours_vocabulary.values()) == list(range(VOCABULARY_SIZE))
    # The same alphabet and '##' continuations; only ties between merges of equal
    # frequency may be broken differently, a handful of the last pieces.
    single = {t for t in reference_vocabulary if len(t.removeprefix("##")) == 1}
    assert single <= set(ours_vocabulary)
    shared = set(ours_vocabulary) & set(reference_vocabulary)
    assert len(shared) >= 0.97 * VOCABULARY_SIZE


def test_wordpiece_round_trip_and_special_tokens():
    tokenizer = Tokenizer.train_wordpiece(corpus(), vocabulary_size=VOCABULARY_SIZE)
    text = "The built-in function returns a new list."
    assert tokenizer.decode(tokenizer.encode(text)) == "the built - in function returns a new list."
    ids = tokenizer.encode("a [MASK] b")
    assert ids[1] == tokenizer.mask_token_id == 4
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)


# Loading local transformers tokenizers: parity with transformers -----------------------
# Fixtures are built here (no download): a SentencePiece unigram model as T5/mT5 ship it,
# a byte-level BPE as BART ships it, and a BPE in CLIP's vocab.json/merges.txt layout.
CHINESE = [
    "机器学习是人工智能的一个分支。",
    "我们喜欢自然语言处理，也喜欢翻译。",
    "今天天气很好，我们去公园散步吧！",
    "这个模型可以把英语翻译成德语和中文。",
    "北京是中国的首都，上海是一个大城市。",
]
# Chinese (and a character no fixture has seen), punctuation, repeated spaces, tabs and
# newlines, digits, full-width and compatibility characters, special tokens in raw text.
SAMPLES = [
    "Translate English to German: The house is wonderful.",
    "机器学习是人工智能的一个分支，我们喜欢自然语言处理！",
    "Hello,   world!!  It's 2024-11-30; 3.14159 & 42%?",
    "  leading,\ttabs\nand  newlines  ",
    "The <extra_id_0> walks in <extra_id_1> park.<extra_id_2>",
    "summarize: x</s>y <pad> <unk>",
    "full-width ＡＢＣ１２３, ½ and ﬁ; rare 龘 and 🙂",
    "<s>Hello <mask> world</s>",
    "<|startoftext|>A Photo of a CAT<|endoftext|>",
    "",
]


def fixture_corpus():
    return [" ".join(d) for d in data.load_text("train")[:30]] + CHINESE * 3


def train_sentencepiece(folder, vocabulary_size=600, model_type="unigram", **options):
    """A T5-layout unigram model (pad 0, end 1, unknown 2, no start) saved as spiece.model."""
    import io

    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(fixture_corpus()), model_writer=model,
        vocab_size=vocabulary_size, model_type=model_type, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, num_threads=1,
        minloglevel=2, **options)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return folder


def append_mt5_sentinels(folder, count):
    """As mT5's mc4.250000.100extra model: normal pieces "▁<extra_id_99>" ... "▁<extra_id_0>"
    at the end of the SentencePiece model itself."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((folder / "spiece.model").read_bytes())
    for i in range(count - 1, -1, -1):
        model.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0, type=1)
    (folder / "spiece.model").write_bytes(model.SerializeToString())
    (folder / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 0}))


@pytest.fixture(scope="module")
def sentencepiece_dirs(tmp_path_factory):
    """{variant: directory}: T5 (transformers appends 100 sentinels), mT5 (sentinels inside
    the model), and sentinels as the model's user-defined pieces."""
    root = tmp_path_factory.mktemp("sentencepiece")
    t5 = train_sentencepiece(root / "t5")
    mt5 = train_sentencepiece(root / "mt5")
    append_mt5_sentinels(mt5, 10)
    user_defined = train_sentencepiece(
        root / "user_defined", user_defined_symbols=[f"<extra_id_{i}>" for i in range(10)])
    (user_defined / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 0}))
    return {"t5": t5, "mt5": mt5, "user_defined": user_defined}


def bytes_to_unicode():
    """GPT-2/CLIP's printable stand-in character for each byte, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b if b in printable else next(extra)) for b in range(256)]


def merges_of(trained):
    merges = json.loads(trained.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    """BART's files: byte-level BPE vocab.json (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>
    last) + merges.txt."""
    tk = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("bart")
    trained = tk.Tokenizer(tk.models.BPE())
    trained.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(fixture_corpus(), tk.trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
    trained.model.save(str(folder))
    vocabulary = json.loads((folder / "vocab.json").read_text())
    vocabulary["<mask>"] = len(vocabulary)
    (folder / "vocab.json").write_text(json.dumps(vocabulary))
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """CLIP's files: vocab.json laid out as CLIP's (the 256 byte characters, the same with
    "</w>", merged pieces in merge order, <|startoftext|>, <|endoftext|>) + merges.txt."""
    tk = pytest.importorskip("tokenizers")
    from keras_bigmodels.tokenizers import CLIP_PATTERN

    folder = tmp_path_factory.mktemp("clip")
    trained = tk.Tokenizer(tk.models.BPE(end_of_word_suffix="</w>"))
    trained.normalizer = tk.normalizers.Sequence([
        tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "),
        tk.normalizers.Lowercase()])
    trained.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(CLIP_PATTERN), behavior="removed", invert=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trained.train_from_iterator(fixture_corpus(), tk.trainers.BpeTrainer(
        vocab_size=900, end_of_word_suffix="</w>", show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
    merges = merges_of(trained)
    alphabet = bytes_to_unicode()
    tokens = (alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
              + ["<|startoftext|>", "<|endoftext|>"])
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def assert_same_as_transformers(ours, reference, texts=SAMPLES):
    """Ids (with and without special tokens, one by one and batched), text (with and
    without special tokens) and the vocabulary size equal transformers' tokenizer's."""
    assert ours.vocabulary_size == len(reference)
    for special in (True, False):
        expected = [reference.encode(t, add_special_tokens=special) for t in texts]
        assert [ours.encode(t, add_special_tokens=special) for t in texts] == expected
        assert ours.encode(texts, add_special_tokens=special) == expected
        for skip in (True, False):
            assert ours.decode(expected, skip_special_tokens=skip) == [
                reference.decode(ids, skip_special_tokens=skip) for ids in expected]
    # Every id of the vocabulary decodes as transformers decodes it.
    every_id = list(range(len(reference)))
    for skip in (True, False):
        assert (ours.decode(every_id, skip_special_tokens=skip)
                == reference.decode(every_id, skip_special_tokens=skip))
    for role in ("eos", "pad", "unk", "bos"):
        assert getattr(ours, f"{role}_token_id") == getattr(reference, f"{role}_token_id")


@pytest.mark.parametrize("variant", ["t5", "mt5", "user_defined"])
def test_sentencepiece_equals_transformers_t5_tokenizer(sentencepiece_dirs, variant):
    # transformers 5 has one T5Tokenizer (T5TokenizerFast and MT5Tokenizer are gone; mT5
    # maps to it), built on the `tokenizers` library from spiece.model.
    transformers = pytest.importorskip("transformers")
    folder = sentencepiece_dirs[variant]
    reference = transformers.T5Tokenizer.from_pretrained(folder)
    ours = Tokenizer.from_dir(folder)
    assert_same_as_transformers(ours, reference)
    # The sentinels are whole tokens, <extra_id_0> the highest id as T5's span corruption
    # counts them down from the end of the vocabulary.
    # (User-defined pieces follow the model's pad, end and unknown pieces.)
    ids = ours.encode("a <extra_id_0> b <extra_id_1>")
    prefix = "▁" if variant == "mt5" else ""
    sentinels = [ours.token_to_id(f"{prefix}<extra_id_{i}>") for i in (0, 1)]
    last = 3 if variant == "user_defined" else ours.vocabulary_size - 1
    assert sentinels == [last, last - 1 if variant != "user_defined" else last + 1]
    assert set(sentinels) <= set(ids)
    # Chinese is read with the learned pieces, not as unknown tokens.
    chinese = ours.encode(CHINESE[0])
    assert ours.unk_token_id not in chinese
    assert "".join(ours.id_to_token(i) for i in chinese) == "▁" + CHINESE[0]
    assert ours.encode("x", add_special_tokens=True)[-1] == ours.eos_token_id == 1


def test_sentencepiece_plain_text_equals_sentencepiece_itself(sentencepiece_dirs):
    """On text without special tokens the ids are SentencePiece's own (an independent
    reference for the converted pieces, scores and normalization table)."""
    spm = pytest.importorskip("sentencepiece")
    processor = spm.SentencePieceProcessor(
        model_file=str(sentencepiece_dirs["t5"] / "spiece.model"))
    ours = Tokenizer.from_dir(sentencepiece_dirs["t5"])
    plain = [t for t in SAMPLES if "<" not in t] + CHINESE
    assert ours.encode(plain) == processor.encode(plain)
    # (NFKC turns the full-width comma into ",", in both.)
    assert ours.decode(ours.encode(CHINESE)) == processor.decode(processor.encode(CHINESE))


@pytest.mark.parametrize("config", [
    {"extra_ids": 100, "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)]},
    {"extra_ids": 3, "additional_special_tokens": ["<extra_id_0>", "<sep>", "▁"]},
    {"extra_ids": 0, "additional_special_tokens": ["<sep>", "<cls>"]},
], ids=["t5_sentinels_listed", "new_and_existing", "no_sentinels"])
def test_sentencepiece_tokenizer_config_as_transformers(sentencepiece_dirs, tmp_path, config):
    """tokenizer_config.json's sentinel count and additional special tokens (new ones get
    ids after the sentinels; one the model has becomes special; listing one sentinel
    leaves the others plain pieces, as transformers does)."""
    transformers = pytest.importorskip("transformers")
    (tmp_path / "spiece.model").write_bytes(
        (sentencepiece_dirs["t5"] / "spiece.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    texts = SAMPLES + ["a <sep> b<cls>c <extra_id_0> ▁ d"]
    assert_same_as_transformers(Tokenizer.from_dir(tmp_path),
                                transformers.T5Tokenizer.from_pretrained(tmp_path), texts)


def test_sentinels_appended_as_transformers_numbers_them(sentencepiece_dirs):
    ours = Tokenizer.from_dir(sentencepiece_dirs["t5"])
    pieces = ours.vocabulary_size - 100
    assert [ours.token_to_id(f"<extra_id_{i}>") for i in (0, 1, 99)] == [
        pieces + 99, pieces + 98, pieces]
    assert Tokenizer.from_sentencepiece(sentencepiece_dirs["t5"] / "spiece.model",
                                        extra_ids=3).vocabulary_size == pieces + 3


def test_bart_equals_transformers_bart_tokenizer(bart_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.BartTokenizer.from_pretrained(bart_dir)
    ours = Tokenizer.from_dir(bart_dir)
    assert_same_as_transformers(ours, reference)
    ids = ours.encode("hello", add_special_tokens=True)
    assert ids == [0, *ours.encode("hello"), 2] and (ours.bos_token_id, ours.eos_token_id) == (0, 2)
    assert ours.mask_token_id == ours.vocabulary_size - 1 == reference.mask_token_id


def test_bart_vocabulary_without_mask_appends_it_as_transformers(bart_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    vocabulary = json.loads((bart_dir / "vocab.json").read_text())
    del vocabulary["<mask>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocabulary))
    (tmp_path / "merges.txt").write_text((bart_dir / "merges.txt").read_text())
    reference = transformers.BartTokenizer.from_pretrained(tmp_path)
    assert_same_as_transformers(Tokenizer.from_dir(tmp_path), reference)


def test_clip_equals_transformers_clip_tokenizer(clip_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.CLIPTokenizer.from_pretrained(clip_dir)
    ours = Tokenizer.from_dir(clip_dir)
    assert_same_as_transformers(ours, reference)
    # Lower-cased, whitespace runs as one space, "</w>" ends each word.
    assert ours.encode("A  PHOTO\nof") == ours.encode("a photo of")
    assert ours.backend.id_to_token(ours.encode("of")[0]).endswith("</w>")
    ids = ours.encode("a photo", add_special_tokens=True)
    assert ids == [ours.token_to_id("<|startoftext|>"), *ours.encode("a photo"),
                   ours.token_to_id("<|endoftext|>")]
    assert ours.pad_token_id == ours.eos_token_id == ours.token_to_id("<|endoftext|>")
    assert ours.decode(ours.encode("A Photo of a CAT.")) == "a photo of a cat ."


@pytest.mark.parametrize("kind", ["t5", "mt5", "bart", "clip"])
def test_directories_saved_by_transformers_load_the_same(
        kind, sentencepiece_dirs, bart_dir, clip_dir, tmp_path):
    """transformers' save_pretrained writes tokenizer.json + tokenizer_config.json."""
    transformers = pytest.importorskip("transformers")
    source, cls = {"t5": (sentencepiece_dirs["t5"], transformers.T5Tokenizer),
                   "mt5": (sentencepiece_dirs["mt5"], transformers.T5Tokenizer),
                   "bart": (bart_dir, transformers.BartTokenizer),
                   "clip": (clip_dir, transformers.CLIPTokenizer)}[kind]
    cls.from_pretrained(source).save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert_same_as_transformers(Tokenizer.from_dir(tmp_path), cls.from_pretrained(tmp_path))


@pytest.mark.parametrize("kind", ["t5", "bart", "clip"])
def test_config_and_save_round_trip(kind, sentencepiece_dirs, bart_dir, clip_dir, tmp_path):
    source = {"t5": sentencepiece_dirs["t5"], "bart": bart_dir, "clip": clip_dir}[kind]
    tokenizer = Tokenizer.from_dir(source)
    tokenizer.special_tokens["pad_token"] = tokenizer.special_tokens["eos_token"]
    tokenizer = Tokenizer(tokenizer.backend, tokenizer.special_tokens)  # a non-default role
    expected = (tokenizer.encode(SAMPLES, add_special_tokens=True), tokenizer.decode(
        tokenizer.encode(SAMPLES, add_special_tokens=True), skip_special_tokens=False),
        tokenizer.vocabulary_size, tokenizer.pad_token_id, tokenizer.bos_token_id)
    tokenizer.save(tmp_path)
    config = json.loads(json.dumps(tokenizer.get_config()))
    for restored in (Tokenizer.from_config(config), Tokenizer.from_dir(tmp_path)):
        ids = restored.encode(SAMPLES, add_special_tokens=True)
        assert (ids, restored.decode(ids, skip_special_tokens=False),
                restored.vocabulary_size, restored.pad_token_id,
                restored.bos_token_id) == expected
        assert restored.pad_token_id == restored.eos_token_id


def write_config(folder, **config):
    (folder / "config.json").write_text(json.dumps(config))


def test_read_tokenizer_picks_the_files_of_the_directory(
        sentencepiece_dirs, bart_dir, clip_dir, tmp_path):
    from keras_bigmodels.checkpoints import read_tokenizer

    assert read_tokenizer(tmp_path) is None
    assert read_tokenizer(sentencepiece_dirs["t5"]).encode("x", add_special_tokens=True)[-1] == 1
    # The same vocab.json + merges.txt: BART's <s> ... </s> where config.json says bart,
    # GPT-2's plain ids where it says gpt2, CLIP's from its vocabulary alone.
    copies = {}
    for model_type in ("bart", "gpt2"):
        folder = tmp_path / model_type
        folder.mkdir()
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_text((bart_dir / name).read_text())
        write_config(folder, model_type=model_type)
        copies[model_type] = read_tokenizer(folder)
    plain = copies["gpt2"].encode("hello", add_special_tokens=True)
    assert copies["bart"].encode("hello", add_special_tokens=True) == [0, *plain, 2]
    assert read_tokenizer(clip_dir).encode("a", add_special_tokens=True)[0] == \
        read_tokenizer(clip_dir).token_to_id("<|startoftext|>")
    # tokenizer_config.json's class wins over the vocabulary's look.
    (tmp_path / "gpt2" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BartTokenizer"}))
    assert read_tokenizer(tmp_path / "gpt2").encode("hello", add_special_tokens=True) == [
        0, *plain, 2]


def test_t5_from_huggingface_reads_spiece_model_and_generates_from_strings(
        sentencepiece_dirs, tmp_path):
    """A T5 checkpoint directory with only spiece.model beside the weights: strings are
    encoded with </s> and decoded as transformers' tokenizer and generate() do."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from keras_bigmodels.models.t5 import T5Seq2SeqLM
    from tests.models.test_t5 import V1_1, save_hf_t5

    reference_tokenizer = transformers.T5Tokenizer.from_pretrained(sentencepiece_dirs["t5"])
    config = dict(V1_1, vocabulary_size=len(reference_tokenizer), num_decoder_layers=None)
    reference = save_hf_t5(tmp_path, config, seed=5)
    (tmp_path / "spiece.model").write_bytes(
        (sentencepiece_dirs["t5"] / "spiece.model").read_bytes())
    lm = T5Seq2SeqLM.from_huggingface(tmp_path)
    assert lm.tokenizer.vocabulary_size == len(reference_tokenizer)
    prompts = ["translate English to German: 机器学习 is fun.", "summarize: <extra_id_0> 42"]
    ours = lm.generate(prompts, max_new_tokens=8)
    expected = []
    for prompt in prompts:
        ids = torch.tensor([reference_tokenizer.encode(prompt)])
        with torch.no_grad():
            out = reference.generate(input_ids=ids, max_new_tokens=8, do_sample=False,
                                     num_beams=1)
        expected.append(reference_tokenizer.decode(out[0, 1:], skip_special_tokens=True))
    assert ours == expected
    assert all(isinstance(text, str) for text in ours) and any(text for text in ours)


def test_bart_from_huggingface_reads_vocab_and_merges_and_generates_from_strings(
        bart_dir, tmp_path):
    """A BART checkpoint directory with vocab.json + merges.txt beside the weights: strings
    are encoded as <s> ... </s> and decoded as transformers' tokenizer and generate() do."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from keras_bigmodels.models.bart import BartSeq2SeqLM

    reference_tokenizer = transformers.BartTokenizer.from_pretrained(bart_dir)
    config = transformers.BartConfig(
        vocab_size=len(reference_tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, init_std=1.0)
    torch.manual_seed(2)
    reference = transformers.BartForConditionalGeneration(config).eval()
    reference.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_text((bart_dir / name).read_text())
    lm = BartSeq2SeqLM.from_huggingface(tmp_path)
    prompts = ["The <mask> walks in the park.", "机器学习 is fun, 42 times!"]
    expected = []
    for prompt in prompts:
        with torch.no_grad():
            out = reference.generate(
                torch.tensor([reference_tokenizer.encode(prompt)]), max_new_tokens=8,
                do_sample=False, num_beams=1, eos_token_id=2, pad_token_id=1,
                forced_eos_token_id=None, forced_bos_token_id=None, no_repeat_ngram_size=0,
                min_length=0)
        expected.append(reference_tokenizer.decode(out[0, 1:], skip_special_tokens=True))
    assert lm.generate(prompts, max_new_tokens=8) == expected
    assert any(expected)


def test_missing_sentencepiece_names_the_extra(sentencepiece_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ImportError, match=r"keras-bigmodels\[sentencepiece\]"):
        Tokenizer.from_dir(sentencepiece_dirs["t5"])


def test_bad_arguments(sentencepiece_dirs, bart_dir, tmp_path):
    with pytest.raises(ValueError, match="`kind` must be one of"):
        Tokenizer.from_dir(bart_dir, kind="gpt")
    with pytest.raises(ValueError, match="for kind='sentencepiece'"):
        Tokenizer.from_dir(bart_dir, kind="sentencepiece")
    with pytest.raises(ValueError, match="No tokenizer in"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(ValueError, match="`extra_ids` must be an int >= 0"):
        Tokenizer.from_sentencepiece(sentencepiece_dirs["t5"] / "spiece.model", extra_ids=-1)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        Tokenizer.from_bpe_files(bart_dir / "vocab.json", bart_dir / "merges.txt",
                                 kind="sentencepiece")
    with pytest.raises(ValueError, match="`special_tokens` keys must be among"):
        Tokenizer(Tokenizer.from_dir(bart_dir).backend, {"start": "<s>"})
    bpe = train_sentencepiece(tmp_path / "bpe", vocabulary_size=300, model_type="bpe")
    with pytest.raises(ValueError, match="unigram"):
        Tokenizer.from_dir(bpe)
