"""Text corpora without downloads: CPython's bundled docs, or the user's own files.

A corpus is a list of documents; a document is a list of sentences. Documents and
sentence boundaries are kept because BERT's next-sentence prediction, ALBERT's sentence
order and BART's sentence permutation need them.
"""

import os
import re

_HEADING_RULE = re.compile(r"^[*=\-~^]{3,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def split_sentences(paragraph):
    """Split a paragraph on sentence-final punctuation followed by a capital."""
    text = " ".join(paragraph.split())
    return [s for s in _SENTENCE_END.split(text) if s]


def _paragraphs(text):
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def text_to_documents(text, min_sentences=2):
    """Split a reST-like text into documents at section headings, then into sentences."""
    documents, current = [], []
    lines = text.splitlines()
    blocks, block = [], []
    for i, line in enumerate(lines):
        # A heading is a text line followed by a rule of *, =, - ...; it starts a document.
        if _HEADING_RULE.match(line) and block:
            title = block.pop()
            blocks.append("\n".join(block))
            blocks.append(None)  # document boundary
            block = [title + "."]
            continue
        block.append(line)
    blocks.append("\n".join(block))
    for chunk in blocks:
        if chunk is None:
            if current:
                documents.append(current)
            current = []
            continue
        for paragraph in _paragraphs(chunk):
            current.extend(split_sentences(paragraph))
    if current:
        documents.append(current)
    return [d for d in documents if len(d) >= min_sentences]


def _split(documents, split, validation_fraction):
    if split is None:
        return {
            "train": _split(documents, "train", validation_fraction),
            "validation": _split(documents, "validation", validation_fraction),
        }
    if split not in ("train", "validation"):
        raise ValueError(f"`split` must be 'train', 'validation' or None; received {split!r}.")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`validation_fraction` must be in (0, 1); received {validation_fraction}."
        )
    # Every k-th document goes to validation: deterministic, and spread over the corpus.
    every = max(2, round(1.0 / validation_fraction))
    picked = [d for i, d in enumerate(documents) if (i % every == every - 1) == (split == "validation")]
    return picked


def load_text(split="train", validation_fraction=0.1):
    """The English documentation text shipped with CPython (`pydoc_data.topics`), offline.

    About 460k characters: ~200 documents (doc sections), ~4,300 sentences.

    Args:
        split: "train", "validation", or None for a dict of both.
        validation_fraction: share of documents held out.

    Returns:
        a list of documents, each a list of sentence strings.

    Example:
    >>> docs = load_text("train")
    >>> isinstance(docs[0][0], str)
    True
    """
    from pydoc_data.topics import topics

    documents, seen = [], set()
    for name in sorted(topics):
        for document in text_to_documents(topics[name]):
            # Some sections appear under several topics; keep one copy so that no
            # document is in both splits.
            if tuple(document) not in seen:
                seen.add(tuple(document))
                documents.append(document)
    return _split(documents, split, validation_fraction)


def load_text_files(path, split=None, validation_fraction=0.1):
    """Documents from the user's .txt/.md files: a file, or a folder searched recursively.

    Documents are split at blank-line-separated section headings (or one per file when
    none), then into sentences.

    Example:
    >>> docs = load_text_files("my_corpus/", split="train")
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.endswith((".txt", ".md", ".rst"))
        )
    else:
        raise ValueError(f"`data` path `{path}` does not exist.")
    if not files:
        raise ValueError(f"No .txt, .md or .rst files under `{path}`.")
    documents = []
    for name in files:
        with open(name, encoding="utf-8", errors="replace") as f:
            documents.extend(text_to_documents(f.read(), min_sentences=1))
    if not documents:
        raise ValueError(f"The text files under `{path}` hold no sentences.")
    if split is None:
        return documents
    return _split(documents, split, validation_fraction)


def documents_to_texts(documents):
    """One string per document (sentences joined by spaces)."""
    return [" ".join(d) for d in documents]
