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
# Only in a gallery model (`siamese-tfx gallery build`): image (encoded bytes) -> the top-k
# enrolled identities.
IDENTIFY = "identify"

# Inputs.
EXAMPLES_INPUT = "examples"  # serving_default: serialized tf.Examples
COMPARE_INPUTS = features.IMAGE_KEYS  # compare: the two images of each pair
EMBED_INPUT = "image"  # embed: one image
IDENTIFY_INPUT = "image"  # identify: one query image

# Outputs of the pair signatures (compare, serving_default) and of embed.
DISTANCE = "distance"
SIMILARITY = "similarity"
MATCH = "match"
PAIR_OUTPUTS = (DISTANCE, SIMILARITY, MATCH)
EMBEDDING = "embedding"

# Outputs of identify, per query image: the top-k identities, nearest first ([batch, k]), and
# whether the nearest one is within the match threshold ([batch]; False: "unknown").
LABELS = "labels"  # string
DISTANCES = "distances"  # float32: the identity's distance (nearest exemplar or mean embedding)
SIMILARITIES = "similarities"  # float32: as compare's similarity, at the identify threshold
KNOWN = "known"  # bool: distances[:, 0] <= the identify threshold (IDENTIFY_THRESHOLD_ATTR)
IDENTIFY_OUTPUTS = (LABELS, DISTANCES, SIMILARITIES, KNOWN)

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
# Variables of a gallery model: what identify searches, and how many identities it returns.
GALLERY_EMBEDDINGS_ATTR = "gallery_embeddings"  # float32 [vectors, D]
GALLERY_IDENTITIES_ATTR = "gallery_identities"  # int32 [vectors]: each vector's identity index
GALLERY_LABELS_ATTR = "gallery_labels"  # string [identities]
IDENTIFY_TOP_K_ATTR = "identify_top_k"  # int64: k of identify's outputs
# float32: identify's known = distance <= this (the match threshold unless the build set one,
# e.g. for a false-alarm rate that evaluate-identification measured).
IDENTIFY_THRESHOLD_ATTR = "identify_threshold"
# <version>/assets/gallery.json: the gallery version, its files' fingerprint, how it was built.
GALLERY_ASSET = "gallery.json"
# How identify scores an identity with several exemplars: its nearest exemplar's distance, or
# the distance to the mean of its exemplars' embeddings.
GALLERY_AGGREGATES = ("nearest", "mean")
