"""The tf.Example features of an image pair: written by PairExampleGen, checked by the schema and
the validation gate, transformed by Transform, read by the Trainer and the serving signatures."""

import os

LEFT_IMAGE = "left_image"  # encoded image bytes (PairExampleGen writes PNG)
RIGHT_IMAGE = "right_image"
LABEL = "label"  # int64: 1 = same identity (class), 0 = different.
LEFT_CLASS = "left_class"  # the class (identity) name of each image, bytes
RIGHT_CLASS = "right_class"
IMAGE_KEYS = (LEFT_IMAGE, RIGHT_IMAGE)
CLASS_KEYS = (LEFT_CLASS, RIGHT_CLASS)

# The curated TFDV schema of these features (ValidationConfig.schema_path overrides it).
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.pbtxt")


def transformed_name(key: str) -> str:
    """Name of a raw feature after Transform."""
    return f"{key}_xf"
