"""The serving contract of the exported SavedModel: signature names, their inputs and outputs,
and TF Serving's warmup file. The Trainer's exporter writes it; the model server, the client,
the warmup writer and the InfraValidator read it."""

from siamese_tfx.components.contract import features

# The name a model is served under unless the pipeline names it (PipelineConfig.model_name).
DEFAULT_MODEL_NAME = "siamese"

# Signature names.
SERVING_DEFAULT = "serving_default"  # Serialized tf.Example -> pair outputs (TFMA's Evaluator).
COMPARE = "compare"  # left_image, right_image (encoded bytes) -> pair outputs.
EMBED = "embed"  # image (encoded bytes) -> embedding.
CONTRACT = (COMPARE, EMBED, SERVING_DEFAULT)

# Inputs.
EXAMPLES_INPUT = "examples"  # serving_default: serialized tf.Examples
COMPARE_INPUTS = features.IMAGE_KEYS  # compare: the two images of each pair
EMBED_INPUT = "image"  # embed: one image

# Outputs of the pair signatures (compare, serving_default) and of embed.
DISTANCE = "distance"
SIMILARITY = "similarity"
MATCH = "match"
PAIR_OUTPUTS = (DISTANCE, SIMILARITY, MATCH)
EMBEDDING = "embedding"

# TF Serving replays <version>/assets.extra/tf_serving_warmup_requests before serving a version.
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"

# Attributes of the exported model (tf.saved_model.load(path).<name>) that describe how it
# decides and what it accepts; readers (describe, quality tools) use these names.
THRESHOLD_ATTR = "match_threshold"  # float32 variable: the calibrated match threshold
# int64 variables: the limits the serving signatures enforce in the graph, before decoding.
MAX_IMAGE_PIXELS_ATTR = "max_image_pixels"  # width x height, read from each image's header
MAX_IMAGE_BYTES_ATTR = "max_image_bytes"  # encoded bytes of each image
MAX_BATCH_SIZE_ATTR = "max_batch_size"  # images (embed) or pairs (compare, serving_default)
LIMIT_ATTRS = (MAX_IMAGE_PIXELS_ATTR, MAX_IMAGE_BYTES_ATTR, MAX_BATCH_SIZE_ATTR)
