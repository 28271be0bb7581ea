"""Model-quality commands on an exported SavedModel (a Trainer or Pusher output):

- `evaluate`: verification metrics on labelled pairs (a pairs manifest or class folders), at the
  threshold stored in the model, plus AUC, EER and the best threshold on these pairs; writes a
  ROC curve and the distance histograms of same vs different pairs (PNG) and metrics.json.
- `oneshot`: N-way one-shot classification in the format of Lake et al.'s Omniglot runs
  (`runNN/training/classNN.png`, `runNN/test/itemNN.png`, `runNN/class_labels.txt` with lines
  "test/itemNN.png training/classMM.png"): each test item is assigned the exemplar at the
  smallest distance. For a model with the euclidean head, the answer is `identify`'s top-1 with
  the run's exemplars as the gallery (the served identification path, components/trainer/
  gallery.py), cross-checked against `compare`'s nearest exemplar; other heads answer through
  `compare` alone. Prints per-run and overall accuracy and writes a PNG of a few queries with
  their nearest exemplars.
- `oneshot-runs`: builds such runs from class folders of held-out Omniglot characters
  (`<alphabet>/<character>/<image>`): each run draws its N characters from ONE alphabet, and
  takes one drawer's image of each as the exemplar and another drawer's as the query.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from siamese_tfx.components.contract import errors, signatures

CLASS_LABELS_FILE = "class_labels.txt"
DEFAULT_EVAL_PAIRS = 1000  # `evaluate` on class folders, when they allow that many


# --- model access -------------------------------------------------------------------------------

def load_model(path: str) -> Any:
    """The SavedModel at `path`, a Trainer output or a folder of versions (the newest); its
    signatures are what is used. A path that holds none is a UsageError naming it."""
    import tensorflow as tf

    from siamese_tfx.pipeline.describe import resolve_saved_model

    return tf.saved_model.load(resolve_saved_model(path))


def stored_threshold(loaded: Any) -> Optional[float]:
    """The calibrated match threshold the model carries, when it is readable."""
    variable = getattr(loaded, signatures.THRESHOLD_ATTR, None)
    return float(variable.numpy()) if variable is not None else None


def compare_many(loaded: Any, lefts: Sequence[bytes], rights: Sequence[bytes],
                 batch_size: int = 64) -> dict[str, np.ndarray]:
    """The `compare` signature over many encoded image pairs, in batches."""
    import tensorflow as tf

    compare = loaded.signatures[signatures.COMPARE]
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(lefts), batch_size):
        left_key, right_key = signatures.COMPARE_INPUTS
        result = compare(**{left_key: tf.constant(list(lefts[start:start + batch_size])),
                            right_key: tf.constant(list(rights[start:start + batch_size]))})
        for key, value in result.items():
            outputs.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(values) for key, values in outputs.items()}


def _read(path: str) -> bytes:
    """Encoded image bytes the exported model can decode (gallery.read_image, the one reader)."""
    from siamese_tfx.components.trainer.gallery import read_image

    return read_image(path)


# --- evaluate -----------------------------------------------------------------------------------

def load_pairs(pairs: str, image_root: str = "", class_depth: int = 1,
               num_pairs: Optional[int] = None, seed: int = 0
               ) -> tuple[list[str], list[str], np.ndarray]:
    """(left paths, right paths, labels) from a pairs manifest CSV (paths relative to
    `image_root`, default the manifest's folder) or, for a folder, `num_pairs` balanced pairs
    sampled from its class folders (`class_depth` levels) with `seed`. Label 1 = same identity.
    `num_pairs` None: DEFAULT_EVAL_PAIRS, or every pair the folder allows when it allows fewer;
    a count above what it allows is a DataError naming the maximum."""
    from siamese_tfx.components.pair_example_gen import inputs, sampling

    if os.path.isdir(pairs):
        classes, _ = inputs.list_class_folders(pairs, class_depth)
        most = sampling.max_balanced_pairs(classes)
        if num_pairs is None:
            num_pairs = min(DEFAULT_EVAL_PAIRS, most)
        elif num_pairs > most:
            raise errors.DataError(
                f"--num-pairs {num_pairs}: the {len(classes)} classes of {pairs!r} allow at most "
                f"{most} distinct balanced pairs; ask for {most} or fewer")
        sampled = sampling.sample_pairs(classes, num_pairs, seed)
        root = pairs
    else:
        if not os.path.isfile(pairs):
            raise errors.UsageError(f"--pairs {pairs!r}: no such file or folder")
        root = image_root or os.path.dirname(os.path.abspath(pairs))
        manifest, rejected = inputs.read_manifest(pairs, root)
        if rejected:
            raise errors.DataError(f"{pairs}: {len(rejected)} bad row(s), first: "
                                   f"line {rejected[0].row}: {rejected[0].reason}")
        sampled = [m.pair for m in manifest]
    lefts = [os.path.join(root, p.left) for p in sampled]
    rights = [os.path.join(root, p.right) for p in sampled]
    return lefts, rights, np.array([p.label for p in sampled], dtype=np.int64)


def evaluate(model_path: str, lefts: Sequence[str], rights: Sequence[str], labels: np.ndarray,
             output_dir: str = "", batch_size: int = 64) -> dict[str, Any]:
    """Verification metrics of the model on the pairs: at its stored threshold (its `match`
    output), the best threshold on these pairs, AUC and EER. With `output_dir`, writes
    metrics.json, roc.png and distance_histogram.png there."""
    from siamese_tfx.components.trainer import calibration, plots

    loaded = load_model(model_path)
    out = compare_many(loaded, [_read(p) for p in lefts], [_read(p) for p in rights],
                       batch_size)
    distance, match = out[signatures.DISTANCE], out[signatures.MATCH].astype(bool)
    y = np.asarray(labels).astype(bool)
    threshold = stored_threshold(loaded)
    if threshold is None:  # The largest distance the model still calls a match.
        threshold = float(distance[match].max()) if match.any() else 0.0
    metrics = calibration.verification_metrics(distance, y, threshold)
    metrics["accuracy"] = float(np.mean(match == y))  # The model's own decisions.
    best, best_accuracy = calibration.best_threshold(distance, y)
    metrics.update(best_threshold_on_these_pairs=best, best_accuracy_on_these_pairs=best_accuracy,
                   model=os.path.abspath(model_path))
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        far, tar = calibration.roc_points(distance, y)
        plots.line_charts(os.path.join(output_dir, "roc.png"), [{
            "title": f"ROC (AUC {metrics['auc']:.4f}, EER {metrics['eer']:.4f})",
            "xlabel": "false match rate", "ylabel": "true match rate",
            "series": {"model": (far, tar)}, "xlim": (0.0, 1.0), "ylim": (0.0, 1.0),
            "diagonal": True}])
        plots.histograms(os.path.join(output_dir, "distance_histogram.png"),
                         {"same identity": distance[y], "different": distance[~y]},
                         "distances of same vs different pairs", "distance", marker=threshold)
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    return metrics


# --- one-shot -----------------------------------------------------------------------------------

@dataclass
class RunResult:
    """One N-way one-shot run: per query, its true and its predicted exemplar."""

    name: str
    queries: list[str] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    distances: list[list[float]] = field(default_factory=list)
    exemplars: list[str] = field(default_factory=list)
    # compare's nearest exemplar per query; `predicted` is identify's top-1 when `through` is
    # "identify", else the same as this.
    compare_predicted: list[str] = field(default_factory=list)
    through: str = "compare"

    @property
    def accuracy(self) -> float:
        return float(np.mean([t == p for t, p in zip(self.truth, self.predicted)]))

    @property
    def compare_accuracy(self) -> float:
        return float(np.mean([t == p for t, p in zip(self.truth, self.compare_predicted)]))

    @property
    def disagreements(self) -> int:
        """Queries whose identify top-1 is not compare's nearest exemplar."""
        return sum(p != c for p, c in zip(self.predicted, self.compare_predicted))


def _relative(path: str) -> str:
    """"run01/test/item01.png" or "test/item01.png" -> "test/item01.png"."""
    parts = path.strip().replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def read_run(run_dir: str) -> tuple[list[str], dict[str, str]]:
    """(exemplar paths relative to the run, {query path: its exemplar}) of a Lake-format run."""
    answers: dict[str, str] = {}
    with open(os.path.join(run_dir, CLASS_LABELS_FILE)) as f:
        for line in f:
            if line.strip():
                query, exemplar = line.split()
                answers[_relative(query)] = _relative(exemplar)
    exemplars = sorted("training/" + n for n in os.listdir(os.path.join(run_dir, "training")))
    missing = sorted(set(answers.values()) - set(exemplars))
    if missing:
        raise ValueError(f"{run_dir}: class_labels.txt names missing exemplars {missing[:3]}")
    return exemplars, answers


def find_runs(runs: str) -> list[str]:
    """`runs` itself when it is a run, else its sub-folders that are runs, sorted."""
    if os.path.exists(os.path.join(runs, CLASS_LABELS_FILE)):
        return [runs]
    found = sorted(os.path.join(runs, d) for d in os.listdir(runs)
                   if os.path.exists(os.path.join(runs, d, CLASS_LABELS_FILE)))
    if not found:
        raise ValueError(f"no one-shot runs (folders with {CLASS_LABELS_FILE}) in {runs!r}")
    return found


def _identifies(loaded: Any) -> bool:
    """Whether `loaded` carries what a gallery model needs (embed, threshold, limits)."""
    needed = (signatures.THRESHOLD_ATTR,) + signatures.LIMIT_ATTRS
    return (signatures.EMBED in loaded.signatures
            and all(getattr(loaded, name, None) is not None for name in needed))


def _identify_top1(loaded: Any, run_dir: str, exemplars: list[str], query_images: list[bytes],
                   batch_size: int) -> Optional[list[str]]:
    """identify's top-1 exemplar per query, the run's exemplars being the gallery (one identity
    each), built and run in-process as `gallery build` saves it; None for a model whose head
    is not euclidean (identify's search is by embedding distance)."""
    import tensorflow as tf

    from siamese_tfx.components.trainer import gallery

    entries = [gallery.GalleryEntry(os.path.join(run_dir, e), e) for e in exemplars]
    try:
        module, _, _ = gallery.gallery_module(loaded, entries, "nearest", top_k=1)
    except ValueError:
        return None
    top1: list[str] = []
    for start in range(0, len(query_images), batch_size):
        out = module.identify(tf.constant(query_images[start:start + batch_size]))
        top1 += [label.decode() for label in out[signatures.LABELS].numpy()[:, 0]]
    return top1


def oneshot_run(loaded: Any, run_dir: str, batch_size: int = 64) -> RunResult:
    """Each query against every exemplar through `compare` (every distance is kept); the
    answer is identify's top-1 for a model with the euclidean head, else compare's nearest
    exemplar."""
    exemplars, answers = read_run(run_dir)
    images = {p: _read(os.path.join(run_dir, p)) for p in exemplars}
    result = RunResult(os.path.basename(os.path.normpath(run_dir)), exemplars=exemplars)
    queries = sorted(answers)
    query_images = [_read(os.path.join(run_dir, query)) for query in queries]
    lefts, rights = [], []
    for data in query_images:
        lefts += [data] * len(exemplars)
        rights += [images[e] for e in exemplars]
    distance = compare_many(loaded, lefts, rights, batch_size)[signatures.DISTANCE]
    distance = distance.reshape(len(queries), len(exemplars))
    for query, row in zip(queries, distance):
        result.queries.append(query)
        result.truth.append(answers[query])
        result.compare_predicted.append(exemplars[int(np.argmin(row))])
        result.distances.append([float(v) for v in row])
    identified = (_identify_top1(loaded, run_dir, exemplars, query_images, batch_size)
                  if _identifies(loaded) else None)
    if identified is None:
        result.predicted = list(result.compare_predicted)
    else:
        result.predicted, result.through = identified, "identify"
    return result


def oneshot(model_path: str, runs: str, output_dir: str = "", examples: int = 6,
            batch_size: int = 64, out: Optional[Any] = None) -> dict[str, Any]:
    """Runs every one-shot run under `runs`, printing per-run and overall accuracy; with
    `output_dir`, writes oneshot.json and oneshot_examples.png (a few queries, their nearest
    exemplars and, when wrong, the right one)."""
    out = out or sys.stdout
    loaded = load_model(model_path)
    results = [oneshot_run(loaded, run, batch_size) for run in find_runs(runs)]
    for r in results:
        print(f"{r.name}: {r.accuracy:.4f} ({sum(t == p for t, p in zip(r.truth, r.predicted))}"
              f"/{len(r.truth)})", file=out)
    overall = float(np.mean([r.accuracy for r in results]))
    way = len(results[0].exemplars)
    through = results[0].through
    print(f"overall {way}-way one-shot accuracy over {len(results)} run(s): {overall:.4f} "
          f"(through {through})", file=out)
    summary = {"accuracy": overall, "runs": {r.name: r.accuracy for r in results},
               "way": way, "model": os.path.abspath(model_path), "through": through}
    if through == "identify":
        # identify's top-1 against compare's nearest exemplar, query by query.
        summary.update(
            compare_accuracy=float(np.mean([r.compare_accuracy for r in results])),
            runs_where_identify_equals_compare=sum(
                r.accuracy == r.compare_accuracy for r in results),
            queries_where_identify_differs=sum(r.disagreements for r in results))
        print(f"compare's nearest exemplar: {summary['compare_accuracy']:.4f}; identify's "
              f"accuracy equals compare's in {summary['runs_where_identify_equals_compare']}/"
              f"{len(results)} runs ({summary['queries_where_identify_differs']} queries "
              "answered differently)", file=out)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "oneshot.json"), "w") as f:
            json.dump(summary, f, indent=1)
        _plot_examples(os.path.join(output_dir, "oneshot_examples.png"), results, runs, examples)
    return summary


def _plot_examples(path: str, results: list[RunResult], runs: str, count: int) -> None:
    from PIL import Image

    from siamese_tfx.components.trainer import plots

    run_dirs = {os.path.basename(os.path.normpath(r)): r for r in find_runs(runs)}
    rows = []
    items = [(r, i) for r in results for i in range(len(r.queries))]
    # Mistakes first (they say the most), then successes.
    items.sort(key=lambda ri: ri[0].truth[ri[1]] == ri[0].predicted[ri[1]])
    for r, i in items[:count]:
        base = run_dirs[r.name]
        order = np.argsort(r.distances[i])[:3]
        row = [(Image.open(os.path.join(base, r.queries[i])), f"query {r.name}", True)]
        for rank, k in enumerate(order):
            exemplar = r.exemplars[k]
            row.append((Image.open(os.path.join(base, exemplar)),
                        f"#{rank + 1} d={r.distances[i][k]:.3f}", exemplar == r.truth[i]))
        if r.truth[i] != r.predicted[i]:
            row.append((Image.open(os.path.join(base, r.truth[i])), "right answer", True))
        rows.append(row)
    plots.image_rows(path, rows)


def make_lake_runs(image_root: str, out_dir: str, num_runs: int = 20, way: int = 20,
                   seed: int = 0) -> list[str]:
    """Writes `num_runs` N-way (`way`) one-shot runs in Lake et al.'s format from Omniglot-style
    class folders `<image_root>/<alphabet>/<character>/<image>`. Each run picks an alphabet with
    at least `way` characters (in turn), `way` of its characters, and two drawers (positions in
    each character's sorted image list, so one drawer's images are the exemplars and another's
    the queries). Returns the run folders."""
    from PIL import Image

    rng = random.Random(seed)
    alphabets = {}
    for alphabet in sorted(os.listdir(image_root)):
        folder = os.path.join(image_root, alphabet)
        if os.path.isdir(folder):
            characters = sorted(c for c in os.listdir(folder)
                                if len(os.listdir(os.path.join(folder, c))) >= 2)
            if len(characters) >= way:
                alphabets[alphabet] = characters
    if not alphabets:
        raise ValueError(f"no alphabet under {image_root!r} has {way} characters with two "
                         "images or more")
    names = sorted(alphabets)
    written = []
    for index in range(num_runs):
        alphabet = names[index % len(names)]
        characters = rng.sample(alphabets[alphabet], way)
        lists = [sorted(os.listdir(os.path.join(image_root, alphabet, c))) for c in characters]
        exemplar_at, query_at = rng.sample(range(min(len(x) for x in lists)), 2)
        run = os.path.join(out_dir, f"run{index + 1:02d}")
        for sub in ("training", "test"):
            os.makedirs(os.path.join(run, sub), exist_ok=True)
        order = list(range(way))
        rng.shuffle(order)  # Query k is of character order[k]: items and classes not aligned.
        lines = []
        for k, c in enumerate(order):
            source = os.path.join(image_root, alphabet, characters[c])
            _copy_png(os.path.join(source, lists[c][exemplar_at]),
                      os.path.join(run, "training", f"class{c + 1:02d}.png"), Image)
            _copy_png(os.path.join(source, lists[c][query_at]),
                      os.path.join(run, "test", f"item{k + 1:02d}.png"), Image)
            lines.append(f"test/item{k + 1:02d}.png training/class{c + 1:02d}.png")
        with open(os.path.join(run, CLASS_LABELS_FILE), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(run, "source.txt"), "w") as f:
            f.write(f"alphabet {alphabet}; exemplar image #{exemplar_at}, query image "
                    f"#{query_at}; characters: {' '.join(characters)}\n")
        written.append(run)
    return written


def _copy_png(source: str, target: str, image_module: Any) -> None:
    if source.lower().endswith(".png"):
        shutil.copyfile(source, target)
    else:
        with image_module.open(source) as image:
            image.save(target, format="PNG")


# --- command line -------------------------------------------------------------------------------

def _evaluate_command(args: argparse.Namespace) -> int:
    lefts, rights, labels = load_pairs(args.pairs, args.image_root, args.class_depth,
                                       args.num_pairs, args.seed)
    metrics = evaluate(args.model, lefts, rights, labels, args.output_dir, args.batch_size)
    for key in ("pairs", "positive_pairs", "threshold", "accuracy", "precision", "recall",
                "false_match_rate", "auc", "eer", "eer_threshold",
                "best_threshold_on_these_pairs", "best_accuracy_on_these_pairs"):
        value = metrics[key]
        print(f"{key:<30} {value:.4f}" if isinstance(value, float) else f"{key:<30} {value}")
    if args.output_dir:
        print(f"wrote metrics.json, roc.png, distance_histogram.png to {args.output_dir}")
    return 0


def _oneshot_command(args: argparse.Namespace) -> int:
    oneshot(args.model, args.runs, args.output_dir, args.examples, args.batch_size)
    if args.output_dir:
        print(f"wrote oneshot.json, oneshot_examples.png to {args.output_dir}")
    return 0


def _runs_command(args: argparse.Namespace) -> int:
    runs = make_lake_runs(args.image_root, args.output, args.runs, args.way, args.seed)
    print(f"wrote {len(runs)} {args.way}-way one-shot runs to {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate_parser = subparsers.add_parser(
        "evaluate", help="Verification metrics, ROC curve and distance histograms of an "
        "exported model on labelled pairs.",
        description="Compares labelled image pairs with an exported model (its compare "
        "signature) and reports accuracy, precision, recall and false-match rate at the "
        "model's calibrated threshold, AUC, EER and the best threshold on these pairs.")
    evaluate_parser.add_argument("--model", required=True,
                                 help="Exported SavedModel folder (Trainer or Pusher output).")
    evaluate_parser.add_argument(
        "--pairs", required=True,
        help="Pairs manifest CSV (left,right,label; label 1 = same identity) or a folder of "
        "class folders to sample balanced pairs from.")
    evaluate_parser.add_argument("--image-root", default="",
                                 help="Root of the manifest's paths (default: its folder).")
    evaluate_parser.add_argument("--class-depth", type=int, default=1,
                                 help="Folder levels that name a class, for a folder of "
                                 "classes (Omniglot: 2) (default: %(default)s).")
    evaluate_parser.add_argument("--num-pairs", type=int, default=None,
                                 help="Pairs sampled from class folders (half same identity) "
                                 f"(default: {DEFAULT_EVAL_PAIRS}, or every pair the folders "
                                 "allow when they allow fewer).")
    evaluate_parser.add_argument("--seed", type=int, default=0,
                                 help="Seed of the pair sampling (default: %(default)s).")
    evaluate_parser.add_argument("--output-dir", default="",
                                 help="Where to write metrics.json, roc.png and "
                                 "distance_histogram.png (default: nothing written).")
    evaluate_parser.add_argument("--batch-size", type=int, default=64,
                                 help="Pairs per model call (default: %(default)s).")
    evaluate_parser.set_defaults(func=_evaluate_command)

    oneshot_parser = subparsers.add_parser(
        "oneshot", help="N-way one-shot classification accuracy on runs in Lake et al.'s "
        "format.",
        description="For every run (runNN/training/classNN.png, runNN/test/itemNN.png, "
        "runNN/class_labels.txt with lines 'test/itemNN.png training/classMM.png'), assigns "
        "each test item to the exemplar at the smallest distance and prints per-run and "
        "overall accuracy.")
    oneshot_parser.add_argument("--model", required=True,
                                help="Exported SavedModel folder (Trainer or Pusher output).")
    oneshot_parser.add_argument("--runs", required=True,
                                help="A run folder, or a folder of run folders.")
    oneshot_parser.add_argument("--output-dir", default="",
                                help="Where to write oneshot.json and oneshot_examples.png "
                                "(default: nothing written).")
    oneshot_parser.add_argument("--examples", type=int, default=6,
                                help="Queries shown in oneshot_examples.png (default: "
                                "%(default)s).")
    oneshot_parser.add_argument("--batch-size", type=int, default=64,
                                help="Pairs per model call (default: %(default)s).")
    oneshot_parser.set_defaults(func=_oneshot_command)

    runs_parser = subparsers.add_parser(
        "oneshot-runs", help="Build Lake-format one-shot runs from Omniglot-style character "
        "folders.",
        description="Each run draws its characters from ONE alphabet "
        "(<image-root>/<alphabet>/<character>/<image>) and uses one drawer's image of each as "
        "the exemplar and another drawer's as the query.")
    runs_parser.add_argument("--image-root", required=True,
                             help="Folder of <alphabet>/<character>/<image> (held-out "
                             "characters).")
    runs_parser.add_argument("--output", required=True, help="Folder to write runNN/ into.")
    runs_parser.add_argument("--runs", type=int, default=20,
                             help="How many runs (default: %(default)s).")
    runs_parser.add_argument("--way", type=int, default=20,
                             help="Characters per run (default: %(default)s).")
    runs_parser.add_argument("--seed", type=int, default=0,
                             help="Seed of the draws (default: %(default)s).")
    runs_parser.set_defaults(func=_runs_command)
