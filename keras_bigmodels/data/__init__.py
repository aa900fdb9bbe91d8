"""Embedded default datasets (never downloaded) and loaders for the user's own data."""

from keras_bigmodels.data.images import caption, load_digits, load_image_folder
from keras_bigmodels.data.text import (
    documents_to_texts,
    load_text,
    load_text_files,
    split_sentences,
    text_to_documents,
)
