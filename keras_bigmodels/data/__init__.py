"""Embedded default datasets (never downloaded) and loaders for the user's own data."""

from keras_bigmodels.data.images import caption, load_digits, load_image_folder
from keras_bigmodels.data.text import (
    documents_to_texts,
    load_text,
    load_text_files,
    split_sentences,
    text_to_documents,
)
from keras_bigmodels.data.images import DIGIT_NAMES
from keras_bigmodels.data.video import (
    load_moving_digits,
    load_video_features,
    save_video_features,
    video_caption,
)
