"""Identification commands (components/trainer/gallery.py does the work):

- `gallery build`: embeds a gallery of enrolled identities with an exported model and writes the
  model with the gallery and its `identify` signature as the next version of a served model, so
  the model servers hot-load it. Enrolling identities never needs retraining.
- `evaluate-identification`: top-1/top-5 accuracy, recall@k, mAP@R and the open-set detection
  and identification rate at false-alarm rates of 1% and 10% of labelled queries against a
  gallery (queries of identities not in the gallery are the strangers), through `identify`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from siamese_tfx.components.contract import errors, signatures
from siamese_tfx.pipeline.describe import resolve_saved_model


def evaluate_identification(model: str, gallery: str, queries: str, class_depth: int = 1,
                            aggregate: str = "nearest", batch_size: int = 64) -> dict[str, Any]:
    """The identification metrics (components/metrics/identification.py) of the model at
    `model` with the gallery at `gallery` on the labelled `queries` (class folders or an
    image,label manifest). The ranking comes from the gallery model's own `identify`."""
    import tensorflow as tf

    from siamese_tfx.components.metrics import identification
    from siamese_tfx.components.trainer import gallery as gallery_lib

    saved_model = resolve_saved_model(model)
    entries = gallery_lib.read_gallery(gallery, class_depth)
    query_entries = gallery_lib.read_gallery(queries, class_depth)
    base = gallery_lib.load_model(saved_model)
    # The identify function a gallery build saves, run in-process.
    module, exemplar_images, record = gallery_lib.gallery_module(
        base, entries, aggregate, top_k=len({e.label for e in entries}))
    images = [gallery_lib.read_image(e.path) for e in query_entries]
    labels, distances = [], []
    for start in range(0, len(images), batch_size):
        out = module.identify(tf.constant(images[start:start + batch_size]))
        labels.append(out[signatures.LABELS].numpy().astype(str))
        distances.append(out[signatures.DISTANCES].numpy())
    queries_embedded = gallery_lib.embed(base, images, batch_size)
    exemplars = gallery_lib.embed(base, exemplar_images, batch_size)
    threshold = float(getattr(base, signatures.THRESHOLD_ATTR).numpy())
    exemplar_distances = np.linalg.norm(
        queries_embedded[:, None, :] - exemplars[None, :, :], axis=2)
    metrics = identification.identification_metrics(
        [e.label for e in query_entries], np.concatenate(labels), np.concatenate(distances),
        [e.label for e in entries], exemplar_distances, threshold)
    metrics.update(model=saved_model, aggregate=aggregate,
                   gallery_fingerprint=record["gallery_fingerprint"])
    return metrics


def _build_command(args: argparse.Namespace) -> int:
    from siamese_tfx.components.trainer import gallery as gallery_lib

    try:
        path, record = gallery_lib.write_next_version(
            resolve_saved_model(args.model), args.gallery, args.serving_dir, args.model_name,
            args.aggregate, args.top_k, args.class_depth, args.threshold)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return int(getattr(error, "exit_code", errors.ExitCode.USAGE))
    print(f"Wrote {path}: {record['identities']} identities from {record['exemplars']} "
          f"exemplars ({record['aggregate']}), identify returns the top {record['top_k']}; "
          f"gallery fingerprint {record['gallery_fingerprint'][:16]}")
    return 0


def export_gallery(model: str, output: str) -> dict[str, Any]:
    """Writes the gallery a gallery model stores to `output` (.npz): `embeddings` [vectors, D]
    (float32, the rows identify searches), `identity` [vectors] (each row's index into
    `labels`), `labels` [identities], `identify_threshold` — what an approximate index outside
    the SavedModel (hnswlib, FAISS, ScaNN) is built from once the gallery outgrows the exact
    search. Returns what was written. A model without a gallery is a UsageError."""
    import tensorflow as tf

    saved_model = resolve_saved_model(model)
    loaded = tf.saved_model.load(saved_model)
    if getattr(loaded, signatures.GALLERY_EMBEDDINGS_ATTR, None) is None:
        raise errors.UsageError(f"--model {saved_model}: holds no gallery (build one with "
                                "`siamese-tfx gallery build`)")
    arrays = {
        "embeddings": getattr(loaded, signatures.GALLERY_EMBEDDINGS_ATTR).numpy(),
        "identity": getattr(loaded, signatures.GALLERY_IDENTITIES_ATTR).numpy(),
        "labels": getattr(loaded, signatures.GALLERY_LABELS_ATTR).numpy().astype(str),
        "identify_threshold": np.float32(
            getattr(loaded, signatures.IDENTIFY_THRESHOLD_ATTR).numpy()),
    }
    with open(output, "wb") as f:  # np.savez would append .npz to a name without it
        np.savez(f, **arrays)
    return {"model": saved_model, "output": output, "vectors": int(len(arrays["embeddings"])),
            "dimensions": int(arrays["embeddings"].shape[1]),
            "identities": int(len(arrays["labels"]))}


def _export_command(args: argparse.Namespace) -> int:
    written = export_gallery(args.model, args.output)
    print(f"Wrote {written['output']}: {written['vectors']} vectors of {written['dimensions']} "
          f"dimensions, {written['identities']} identities, from {written['model']}")
    return 0


def _evaluate_command(args: argparse.Namespace) -> int:
    try:
        metrics = evaluate_identification(args.model, args.gallery, args.queries,
                                          args.class_depth, args.aggregate, args.batch_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(getattr(error, "exit_code", errors.ExitCode.USAGE))
    for key, value in metrics.items():
        print(f"{key:<34} {value:.4f}" if isinstance(value, float) else f"{key:<34} {value}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _add_gallery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="Exported SavedModel (Trainer output, serving/<name>/<version>, "
                        "or serving/<name> for its newest version); euclidean head.")
    parser.add_argument("--gallery", required=True,
                        help="Class folders <gallery>/<identity>/<image>, or a manifest CSV "
                        "with columns image,label (paths relative to its folder).")
    parser.add_argument("--class-depth", type=int, default=1,
                        help="Folder levels that name an identity (default: %(default)s).")
    parser.add_argument("--aggregate", choices=signatures.GALLERY_AGGREGATES, default="nearest",
                        help="An identity's distance with several exemplars: its nearest "
                        "exemplar's, or its mean embedding's (default: %(default)s).")


def register(subparsers: argparse._SubParsersAction) -> None:
    gallery = subparsers.add_parser(
        "gallery", help="Enrol identities: build a served model with a gallery and identify.",
        description="Gallery models answer 'who is this?' through their identify signature.")
    actions = gallery.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="Write the model plus a gallery as the next served version.",
        description="Embeds the gallery with the model's embed signature and writes the model "
        "with the gallery's embeddings and labels and an identify signature (image bytes -> "
        "top-k labels, distances, similarities, known) as the next version under "
        "<serving-dir>/<model-name>/, atomically, for the model servers to hot-load. Exit code "
        "2 when the model or the gallery cannot be used.")
    _add_gallery_options(build)
    build.add_argument("--serving-dir", required=True,
                       help="Model base folder the servers serve (holds <model-name>/<version>).")
    build.add_argument("--model-name", required=True, help="Served model name.")
    build.add_argument("--top-k", type=int, default=5,
                       help="Identities identify returns per query, nearest first (at most the "
                       "gallery's identities) (default: %(default)s).")
    build.add_argument("--threshold", type=float, default=None,
                       help="identify's known: nearest distance <= this (default: the model's "
                       "calibrated match threshold; e.g. evaluate-identification's "
                       "threshold_at_far_0.01 for a 1%% false-alarm rate).")
    build.set_defaults(func=_build_command)

    export = actions.add_parser(
        "export", help="Write a gallery model's embeddings and labels to .npz (for an "
        "approximate index).",
        description="Writes the gallery a gallery model stores (embeddings, each row's identity, "
        "labels, identify's threshold) to an .npz file, from which an approximate nearest-"
        "neighbour index (hnswlib, FAISS, ScaNN) is built when the gallery outgrows the exact "
        "search in the graph (the README's scale table).")
    export.add_argument("--model", required=True,
                        help="A gallery model (serving/<name>/<version>, or serving/<name> for "
                        "its newest version).")
    export.add_argument("--output", required=True, help="The .npz file to write.")
    export.set_defaults(func=_export_command)

    evaluate = subparsers.add_parser(
        "evaluate-identification", help="Identification metrics of a model with a gallery on "
        "labelled queries.",
        description="Top-1/top-5 accuracy, recall@k, mAP@R, and the open-set detection and "
        "identification rate at false-alarm rates of 1%% and 10%% (queries of identities not "
        "in the gallery are strangers), and at the model's calibrated threshold.")
    _add_gallery_options(evaluate)
    evaluate.add_argument("--queries", required=True,
                          help="Labelled queries: class folders or an image,label manifest.")
    evaluate.add_argument("--batch-size", type=int, default=64,
                          help="Images per model call (default: %(default)s).")
    evaluate.add_argument("--output", default="", help="Also write the metrics as JSON here.")
    evaluate.set_defaults(func=_evaluate_command)
