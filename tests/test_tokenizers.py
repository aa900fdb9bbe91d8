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
