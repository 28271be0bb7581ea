"""Feature names shared by ingestion, Transform, the model and its serving signatures."""

LEFT_IMAGE = "left_image"
RIGHT_IMAGE = "right_image"
LABEL = "label"  # int64: 1 = same identity (class), 0 = different.
LEFT_CLASS = "left_class"
RIGHT_CLASS = "right_class"
IMAGE_KEYS = (LEFT_IMAGE, RIGHT_IMAGE)


def transformed_name(key: str) -> str:
    """Name of a raw feature after Transform."""
    return f"{key}_xf"


# Outputs of the exported model's pair signatures.
DISTANCE = "distance"
SIMILARITY = "similarity"
MATCH = "match"
EMBEDDING = "embedding"

# Signature names of the exported SavedModel.
SERVING_DEFAULT_SIGNATURE = "serving_default"  # Serialized tf.Example -> pair outputs (TFMA).
COMPARE_SIGNATURE = "compare"  # left_image, right_image (encoded bytes) -> pair outputs.
EMBED_SIGNATURE = "embed"  # image (encoded bytes) -> embedding.
