"""The typed config sections of siamese-tfx, and the dataclass machinery they are built with.

Every setting of a run lives in one tree of frozen dataclasses: these sections, gathered by
`siamese_tfx.pipeline.config.PipelineConfig`. Each field carries the help text its command-line
option shows (`options.add_dataclass_options` generates the options), so help and defaults are
written once, here. The pipeline hands each component its section; the component's code (in Beam
workers, Trainer pods) reads it back with `from_dict`, importing only this module. Nothing here
touches the environment or the file system.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from siamese_tfx.components.contract import signatures

T = TypeVar("T")

# small_conv, koch (Koch et al. 2015), conv4 (few-shot learning's 4-block network) and vgg are
# built here; the others are keras.applications backbones (weights=None, or
# ModelConfig.backbone_weights), resized up to their minimum input.
BACKBONES = ("small_conv", "koch", "conv4", "vgg", "mobilenet_v2", "resnet50", "inception_v3",
             "efficientnet_b0")
# contrastive and triplet train the euclidean head; binary_crossentropy the l1_sigmoid (Koch)
# and matchnet heads.
LOSSES = ("contrastive", "triplet", "binary_crossentropy")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with the help text (and optional `choices`) of its command-line option."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class DataConfig:
    """Where the image pairs come from and how they are split."""

    image_root: str = option("", "Folder of images. Class-folder mode: <root>/<class>/<image>.")
    manifest: str = option(
        "",
        "Pairs manifest CSV with columns left,right,label (paths relative to --image-root; "
        "label 1 = same identity, 0 = different). Empty: sample pairs from class folders.",
    )
    class_depth: int = option(
        1, "How many folder levels under the image root name one class (Omniglot: 2)."
    )
    num_train_pairs: int = option(2000, "Pairs sampled for the train split (half positive).")
    num_eval_pairs: int = option(500, "Pairs sampled for the eval split (half positive).")
    eval_class_fraction: float = option(
        0.3, "Fraction of classes held out for the eval split (splits never share a class)."
    )
    seed: int = option(0, "Seed for the class split and the pair sampling.")
    max_image_pixels: int = option(
        50_000_000, "Images with more pixels than this are rejected (decompression bombs); "
        "this limit, not Pillow's own, is the one that applies."
    )
    max_image_bytes: int = option(
        64 * 1024 * 1024, "Image files larger than this many bytes are rejected unread."
    )

    max_quarantined: int = option(
        0,
        "How many bad inputs (unreadable images, bad manifest rows) a run tolerates: more stop "
        "the run with the quarantine report; up to this many are reported and left out.",
    )

    def __post_init__(self) -> None:
        check(self.max_quarantined >= 0, "max_quarantined must be >= 0")
        check(self.class_depth >= 1, "class_depth must be >= 1")
        check(self.num_train_pairs >= 2, "num_train_pairs must be >= 2")
        check(self.num_eval_pairs >= 2, "num_eval_pairs must be >= 2")
        check(0.0 < self.eval_class_fraction < 1.0, "eval_class_fraction must be in (0, 1)")
        check(self.max_image_pixels > 0, "max_image_pixels must be > 0")
        check(self.max_image_bytes > 0, "max_image_bytes must be > 0")


@dataclass(frozen=True)
class ImageConfig:
    """What Transform makes of every image (and so what the model sees)."""

    height: int = option(32, "Image height after resizing.")
    width: int = option(32, "Image width after resizing.")
    channels: int = option(1, "Channels after decoding: 1 (greyscale) or 3 (RGB).", choices=(1, 3))

    def __post_init__(self) -> None:
        check(self.height >= 8 and self.width >= 8, "image height and width must be >= 8")
        check(self.channels in (1, 3), "channels must be 1 or 3")


@dataclass(frozen=True)
class ModelConfig:
    """The Siamese network: one shared backbone, a distance head and its loss."""

    backbone: str = option("small_conv", "Backbone shared by both branches.", choices=BACKBONES)
    backbone_weights: str = option(
        "",
        "Local weights file for a keras.applications backbone (include_top=False). Empty: "
        "random initialisation (nothing is ever downloaded).",
    )
    embedding_dim: int = option(64, "Size of the embedding the backbone produces.")
    head: str = option(
        "euclidean",
        "Distance head: euclidean (distance of unit embeddings; contrastive or triplet loss), "
        "l1_sigmoid (Koch et al.: dense sigmoid on |a - b|) or matchnet (learned metric network "
        "on the concatenated embeddings); both of the latter train with binary_crossentropy.",
        choices=("euclidean", "l1_sigmoid", "matchnet"),
    )
    loss: str = option("contrastive", "Training loss.", choices=LOSSES)
    margin: float = option(
        1.0,
        "Margin of the contrastive loss (different pairs are pushed this far apart) and of the "
        "triplet loss (negatives this much farther than positives).",
    )
    standardize_images: bool = option(
        False,
        "Standardize each image (zero mean, unit variance over its pixels) at the start of the "
        "backbone, so in the served model too: removes global brightness and contrast (faces).",
    )
    shared_weights: bool = option(
        True,
        "One backbone for both images (Siamese). --no-shared-weights builds a PSEUDO-Siamese "
        "network (two unshared branches), for comparison only; its embed signature uses the "
        "left branch.",
    )
    ensemble_members: int = option(
        1,
        "Independently trained copies of the network (training seeds seed, seed+1, ...), each "
        "for --train-steps, served as ONE model: its embedding is the members' unit embeddings "
        "concatenated and scaled by 1/sqrt(members), so its distance is the root mean square of "
        "the members' distances. Averages out run-to-run training noise on small data; costs "
        "members x the training. Euclidean head and shared weights only.",
    )
    ensemble_class_fraction: float = option(
        1.0,
        "Ensembles trained with the triplet loss's class batches: each member trains on this "
        "fraction of the train split's classes, its own random draw (bagging by identity: "
        "members that saw different identities err on different pairs). 1.0: every member "
        "sees every class and the members differ only by their seed.",
    )

    def __post_init__(self) -> None:
        check(self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}")
        check(self.loss in LOSSES, f"loss must be one of {LOSSES}")
        check(self.head in ("euclidean", "l1_sigmoid", "matchnet"),
               "head must be euclidean, l1_sigmoid or matchnet")
        check((self.head == "euclidean") == (self.loss in ("contrastive", "triplet")),
               f"head {self.head!r} cannot train with loss {self.loss!r}: the euclidean head "
               "takes contrastive or triplet, l1_sigmoid and matchnet take binary_crossentropy")
        check(self.embedding_dim >= 2, "embedding_dim must be >= 2")
        check(self.margin > 0, "margin must be > 0")
        check(self.ensemble_members >= 1, "ensemble_members must be >= 1")
        check(self.ensemble_members == 1 or (self.head == "euclidean" and self.shared_weights),
               f"ensemble_members {self.ensemble_members} needs the euclidean head and shared "
               f"weights (got head {self.head!r}, shared_weights {self.shared_weights}): an "
               "ensemble is served as one embedding, the members' concatenated")
        check(0.0 < self.ensemble_class_fraction <= 1.0,
               "ensemble_class_fraction must be in (0, 1]")
        check(self.ensemble_class_fraction == 1.0 or
               (self.ensemble_members > 1 and self.loss == "triplet"),
               f"ensemble_class_fraction {self.ensemble_class_fraction} needs an ensemble "
               f"(ensemble_members > 1, got {self.ensemble_members}) trained with the triplet "
               f"loss (got {self.loss!r}): the members' classes are drawn from its class batches")


@dataclass(frozen=True)
class TrainConfig:
    """The Trainer's loop."""

    train_steps: int = option(1500, "Training steps.")
    batch_size: int = option(64, "Global batch size (pairs per step).")
    learning_rate: float = option(1e-3, "Adam learning rate.")
    calibration_steps: int = option(
        20, "Eval-split batches used to calibrate the match threshold after training."
    )
    augment: bool = option(
        False,
        "Random small affine distortions (rotation, shear, scale, shift, as Koch et al.) of "
        "the training images, on the fly; never applied to eval data or in the served model.",
    )
    flip_horizontal: bool = option(
        False,
        "With --augment: also mirror training images left-right at random (faces; not for "
        "characters).",
    )
    classes_per_batch: int = option(
        16,
        "Triplet loss: the Trainer builds every training batch from this many classes of the "
        "train split (recovered from its positive pairs), 2 x batch-size / this images of each, "
        "and mines triplets over them. 0 (or a split with too few classes): batches of the "
        "sampled pairs, each same pair a class of its own.",
    )
    rotation_classes: bool = option(
        False,
        "Class batches: each 90-degree rotation of a class is a class of its own (the "
        "'new classes by rotation' augmentation of few-shot learning on Omniglot; square "
        "images only). Training batches only.",
    )
    lr_schedule: str = option(
        "constant",
        "Learning rate over the run: constant, or cosine (decays to 5%% of --learning-rate "
        "by the last step).",
        choices=("constant", "cosine"),
    )
    threshold_mode: str = option(
        "accuracy",
        "How the match threshold is calibrated on the eval split: accuracy (the distance that "
        "maximises accuracy) or false_match_rate (the largest distance whose false-match rate "
        "is at most --target-false-match-rate).",
        choices=("accuracy", "false_match_rate"),
    )
    target_false_match_rate: float = option(
        0.01, "The false-match rate the threshold must meet with --threshold-mode "
        "false_match_rate."
    )
    curve_every: int = option(
        50, "Steps between points of the training curves (TensorBoard and training_curves.png)."
    )
    progress_seconds: float = option(
        10.0, "Seconds between the Trainer's progress lines in its log (ensemble member, "
        "step/total, loss, steps/s, time left)."
    )
    per_replica_batch_size: int = option(
        0,
        "Pairs per replica per step; > 0 makes the global batch this x the replicas in sync "
        "(GPUs x workers). 0: --batch-size is the global batch, split across replicas.",
    )
    checkpoint_steps: int = option(
        100, "Steps between backups in <model_run_dir>/backup; a preempted worker resumes from "
        "the last one."
    )
    mixed_precision: bool = option(
        False, "float16 compute on GPU (float32 variables, loss and outputs)."
    )
    steps_per_execution: int = option(
        1, "Training steps run in one call of the compiled training function (Keras' "
        "steps_per_execution): fewer Python round trips per step; progress lines, curve points "
        "and backups then fall on multiples of it."
    )
    jit_compile: bool = option(
        False, "Compile the training step with XLA (Keras' jit_compile)."
    )

    def __post_init__(self) -> None:
        check(self.train_steps >= 1, "train_steps must be >= 1")
        check(self.per_replica_batch_size >= 0, "per_replica_batch_size must be >= 0")
        check(self.checkpoint_steps >= 1, "checkpoint_steps must be >= 1")
        check(self.batch_size >= 2, "batch_size must be >= 2")
        check(self.learning_rate > 0, "learning_rate must be > 0")
        check(self.calibration_steps >= 1, "calibration_steps must be >= 1")
        check(self.threshold_mode in ("accuracy", "false_match_rate"),
               "threshold_mode must be accuracy or false_match_rate")
        check(0.0 <= self.target_false_match_rate <= 1.0,
               "target_false_match_rate must be in [0, 1]")
        check(self.curve_every >= 1, "curve_every must be >= 1")
        check(self.progress_seconds > 0, "progress_seconds must be > 0")
        check(self.steps_per_execution >= 1, "steps_per_execution must be >= 1")
        check(self.classes_per_batch >= 0, "classes_per_batch must be >= 0")
        check(self.lr_schedule in ("constant", "cosine"),
               "lr_schedule must be constant or cosine")


@dataclass(frozen=True)
class EvalConfig:
    """What a model must reach (Evaluator) before it is blessed and pushed."""

    min_accuracy: float = option(0.7, "Verification accuracy the model must reach on the eval split.")
    min_auc: float = option(0.75, "ROC AUC the model must reach on the eval split.")
    max_accuracy_drop: float = option(
        0.02, "How much accuracy may fall below the latest blessed model's before it is refused."
    )
    max_eer: float = option(
        0.3, "Largest equal error rate (where false matches and false non-matches are equally "
        "frequent) the model may have on the eval split."
    )
    max_eer_increase: float = option(
        0.02, "How much the equal error rate may rise above the latest blessed model's before "
        "the model is refused, even when its accuracy holds."
    )
    max_fnmr_at_fmr: float = option(
        1.0, "Largest false non-match rate (same-class pairs refused) at the threshold that "
        "accepts at most --target-fmr of the different-class pairs. 1.0: not a blessing "
        "condition, only reported."
    )
    target_fmr: float = option(
        0.01, "The false match rate at which --max-fnmr-at-fmr is measured."
    )

    def __post_init__(self) -> None:
        check(self.max_accuracy_drop >= 0, "max_accuracy_drop must be >= 0")
        check(0 <= self.max_eer <= 1, "max_eer must be in [0, 1]")
        check(self.max_eer_increase >= 0, "max_eer_increase must be >= 0")
        check(0 <= self.max_fnmr_at_fmr <= 1, "max_fnmr_at_fmr must be in [0, 1]")
        check(0 < self.target_fmr < 1, "target_fmr must be in (0, 1)")

    @classmethod
    def record_only(cls) -> "EvalConfig":
        """Thresholds every model passes: the Evaluator only records its figures (benchmarks,
        and tests whose few training steps make no useful model)."""
        return cls(min_accuracy=0.0, min_auc=0.0, max_accuracy_drop=1.0, max_eer=1.0,
                   max_eer_increase=1.0, max_fnmr_at_fmr=1.0)


@dataclass(frozen=True)
class ValidationConfig:
    """What the examples must satisfy before anything is trained on them (DataValidationGate)."""

    schema_path: str = option(
        "",
        "Curated schema (schema.pbtxt) the examples are validated against. Empty: the curated "
        "schema the package ships (components/contract/schema.pbtxt).",
    )
    allow_anomalies: bool = option(
        False,
        "Let this run train on data with anomalies (schema, drift, class balance, split "
        "sizes). They are still reported, and the run summary says they were overridden.",
    )
    max_label_drift: float = option(
        0.1,
        "Largest Jensen-Shannon divergence of each split's label distribution from the previous "
        "accepted run's (a run the gate passed or was overridden on).",
    )
    max_image_size_drift: float = option(
        0.1,
        "Largest Jensen-Shannon divergence of each split's image height and width "
        "distributions from the previous accepted run's.",
    )
    min_positive_fraction: float = option(
        0.3, "Smallest share of label-1 (same identity) pairs in each split."
    )
    max_positive_fraction: float = option(
        0.7, "Largest share of label-1 (same identity) pairs in each split."
    )
    min_split_examples: int = option(2, "Fewest pairs each split (train, eval) must hold.")

    def __post_init__(self) -> None:
        check(self.max_label_drift >= 0, "max_label_drift must be >= 0")
        check(self.max_image_size_drift >= 0, "max_image_size_drift must be >= 0")
        check(
            0.0 <= self.min_positive_fraction <= self.max_positive_fraction <= 1.0,
            "need 0 <= min_positive_fraction <= max_positive_fraction <= 1",
        )
        check(self.min_split_examples >= 1, "min_split_examples must be >= 1")


@dataclass(frozen=True)
class InfraValidationConfig:
    """How the candidate model is checked through the serving stack before Pusher may push it
    (InfraValidator: a separate model server process on 127.0.0.1)."""

    infra_load_timeout_s: float = option(
        180.0, "Seconds the model server process may take to start, load the candidate and "
        "replay its warmup requests."
    )
    infra_request_timeout_s: float = option(60.0, "Deadline of each validation request, seconds.")
    infra_tolerance: float = option(
        1e-5, "Largest difference allowed between an output served over gRPC and the same "
        "output computed in-process (absolute, and relative to its size)."
    )

    def __post_init__(self) -> None:
        check(self.infra_load_timeout_s > 0, "infra_load_timeout_s must be > 0")
        check(self.infra_request_timeout_s > 0, "infra_request_timeout_s must be > 0")
        check(self.infra_tolerance >= 0, "infra_tolerance must be >= 0")


@dataclass(frozen=True)
class GalleryConfig:
    """Enrolled identities the pipeline adds to the trained model (GalleryBuilder, after the
    Trainer): the Evaluator, InfraValidator and Pusher then work on the model with the gallery
    and its `identify` signature. An empty gallery_path leaves the pipeline without it."""

    gallery_path: str = option(
        "", "Gallery of enrolled identities added to the trained model: class folders "
        "<gallery>/<identity>/<image>, or a manifest CSV with columns image,label (paths "
        "relative to its folder). The pushed model then answers identify (image -> top-k "
        "identities). Read where GalleryBuilder runs (on Kubeflow: a path its pod sees). "
        "Needs the euclidean head. Empty: no gallery.", flags=("--gallery", "--gallery-path"))
    gallery_class_depth: int = option(
        1, "Folder levels under the gallery folder that name one identity (Omniglot: 2).")
    gallery_aggregate: str = option(
        "nearest", "An identity's distance with several exemplars: its nearest exemplar's, or "
        "its mean embedding's.", choices=signatures.GALLERY_AGGREGATES)
    gallery_top_k: int = option(
        5, "Identities identify returns per query, nearest first (at most the gallery's "
        "identities).")

    def __post_init__(self) -> None:
        check(self.gallery_class_depth >= 1, "gallery_class_depth must be >= 1")
        check(self.gallery_aggregate in signatures.GALLERY_AGGREGATES,
              f"gallery_aggregate must be one of {signatures.GALLERY_AGGREGATES}")
        check(self.gallery_top_k >= 1, "gallery_top_k must be >= 1")

    @property
    def enabled(self) -> bool:
        return bool(self.gallery_path)


@dataclass(frozen=True)
class ServingLimitsConfig:
    """What the served model accepts from a client. The Trainer stores these limits in the
    exported SavedModel, beside its threshold, and its signatures check them in the graph before
    decoding anything, so TF Serving enforces them too (INVALID_ARGUMENT naming the limit)."""

    serving_max_image_pixels: int = option(
        16_777_216,
        "Largest image the served model decodes, in pixels (width x height, read from the "
        "PNG/JPEG/GIF/BMP header before decoding; a GIF's frames count too). Decoding takes "
        "about 15 bytes per pixel, so this bounds the memory one image of a request can take "
        "(decompression bombs). Separate from --max-image-pixels, which bounds the training "
        "data at ingestion. Default 4096 x 4096.",
    )
    serving_max_image_bytes: int = option(
        16 * 1024 * 1024, "Largest encoded image the served model accepts, in bytes."
    )
    serving_max_batch_size: int = option(
        1024,
        "Most images (embed) or pairs (compare, serving_default) one call of the served model "
        "takes; the Evaluator sends its batches at this size.",
    )

    def __post_init__(self) -> None:
        check(self.serving_max_image_pixels >= 1, "serving_max_image_pixels must be >= 1")
        check(self.serving_max_image_bytes >= 64, "serving_max_image_bytes must be >= 64")
        check(self.serving_max_batch_size >= 1, "serving_max_batch_size must be >= 1")


@dataclass(frozen=True)
class TrainerSettings:
    """Everything the Trainer's `run_fn` reads, as it travels in the Trainer's custom_config."""

    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    serving_limits: ServingLimitsConfig = field(default_factory=ServingLimitsConfig)
    seed: int = 0  # the pipeline's seed (DataConfig.seed): training seeds start here
    model_name: str = signatures.DEFAULT_MODEL_NAME  # the name the model is served under (its warmup requests)

    def to_custom_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, values: Mapping[str, Any]) -> "TrainerSettings":
        return from_dict(cls, values)


def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """Builds dataclass `cls` from a (possibly nested) dict, refusing unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)  # JSON and repeated options give lists
        kwargs[name] = value
    return cls(**kwargs)


def section_to_dict(section: Any) -> dict[str, Any]:
    """A config section as the JSON-able dict that travels in a component's custom_config."""
    return dataclasses.asdict(section)


def check(condition: bool, message: str) -> None:
    """Raises ValueError(message) unless `condition` (the config's validation)."""
    if not condition:
        raise ValueError(message)
