"""Model-quality benchmark: trains through the pipeline (LocalDagRunner) on the real datasets and
measures the exported model on data it never saw.

    .venv/bin/python bench/quality.py omniglot   # verification + 20-way within-alphabet one-shot
    .venv/bin/python bench/quality.py orl        # face verification EER
    .venv/bin/python bench/quality.py all

Omniglot (both "small" background sets, Greek/Latin deduplicated, 242 characters): from each
alphabet with at least 40 characters (Korean, Japanese (katakana), Sanskrit) 20 characters are
held out as the TEST set; the pipeline trains on the other 182 (PairExampleGen holds
--eval-class-fraction of them, 10% by default, out as its eval split, on which the Trainer
calibrates the threshold). Reported on the
test characters: verification accuracy at the model's calibrated threshold (balanced pairs),
AUC and EER, and 20-way one-shot accuracy on Lake-format runs whose 20 characters come from one
alphabet (one drawer's image as exemplar, another's as query).

ORL faces: the pipeline trains on subjects s1-s24 (2 of them held out for calibration by
default);
reported: EER (and accuracy, AUC) on balanced pairs of subjects s25-s30, the EER over every
pair of their images, and open-set identification among them. The recipe was chosen on
s25-s30, so that figure measures the choice as well as the model.

ORL cross-validation by subject (--folds K): s1-s30 shuffled with --seed into K folds (5: six
subjects each); for each fold the pipeline trains on the other subjects (calibration subjects
drawn from those, by --eval-class-fraction as above) and the fold's subjects are its test set,
measured as the single split's s25-s30. Each fold runs in its own work folder
(<work-dir>/orl_fold<i>); every fold's figures, their mean and sample standard deviation go to
<work-dir>/orl_folds/results.json. Protocol: the folds named by --validation-folds (0 and 1 by
default) are VALIDATION folds, the only ones a recipe is chosen on (--only-folds 0 1 runs just
them); the others are TEST folds, whose mean is the figure to report, measured once with the
chosen recipe and never used to compare recipes.

Unset options take the dataset's recipe (DEFAULTS below, shown by --help). Everything is
written under --work-dir (default runs/bench_quality/); the figures are printed
and saved to <work-dir>/<dataset>/results.json.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import random
import shutil
import sys
import time
import zipfile
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = os.environ.get("SIAMESE_TFX_SHARED_DATA",
                             os.path.join(REPO, "..", "shared", "data"))
OMNIGLOT_ZIPS = [os.path.join(SHARED_DATA, "omniglot", f"images_background_small{i}.zip")
                 for i in (1, 2)]
ORL_ZIP = os.path.join(SHARED_DATA, "orl_faces", "orl_faces_s1-s30.zip")
# ORL cross-validation: the folds recipes are compared on (the others are the test folds).
DEFAULT_VALIDATION_FOLDS = [0, 1]


def _copy_classes(source_root: str, classes: list[str], target_root: str) -> str:
    for name in classes:
        shutil.copytree(os.path.join(source_root, name), os.path.join(target_root, name),
                        dirs_exist_ok=True)
    return target_root


def prepare_omniglot(work: str, held_out_per_alphabet: int, seed: int) -> tuple[str, str]:
    """(train root, test root): `held_out_per_alphabet` characters of every alphabet with at
    least twice that many are the test set; all other characters are for the pipeline."""
    from siamese_tfx.pipeline.datasets import extract_omniglot

    everything = os.path.join(work, "all")
    if not os.path.isdir(everything):
        extract_omniglot(OMNIGLOT_ZIPS, everything)
    rng = random.Random(seed)
    train, test = [], []
    for alphabet in sorted(os.listdir(everything)):
        characters = sorted(os.listdir(os.path.join(everything, alphabet)))
        held = (set(rng.sample(characters, held_out_per_alphabet))
                if len(characters) >= 2 * held_out_per_alphabet else set())
        for c in characters:
            (test if c in held else train).append(os.path.join(alphabet, c))
    train_root, test_root = os.path.join(work, "train"), os.path.join(work, "test")
    for root in (train_root, test_root):
        shutil.rmtree(root, ignore_errors=True)
    _copy_classes(everything, train, train_root)
    _copy_classes(everything, test, test_root)
    print(f"Omniglot: {len(train)} characters for the pipeline, {len(test)} held out "
          f"({held_out_per_alphabet} of each alphabet with >= {2 * held_out_per_alphabet})",
          flush=True)
    return train_root, test_root


def zip_alphabets(zip_path: str) -> set[str]:
    """The alphabets an Omniglot background zip holds (<set>/<alphabet>/<character>/<image>)."""
    with zipfile.ZipFile(zip_path) as archive:
        return {parts[1] for parts in (n.split("/") for n in archive.namelist())
                if len(parts) == 4 and parts[3].lower().endswith(".png")}


def prepare_omniglot_cross_alphabet(work: str, train_sets: list[str]) -> tuple[str, str]:
    """(train root, test root) for the test closest to Lake et al.'s with the data here: every
    character of the `train_sets` ("small1", "small2") for the pipeline; the test set is every
    character of the alphabets that only the other set holds (for small1: Japanese (katakana),
    Sanskrit and Tagalog), alphabets no training image comes from."""
    from siamese_tfx.pipeline.datasets import extract_omniglot

    zips = dict(zip(("small1", "small2"), OMNIGLOT_ZIPS))
    unknown = sorted(set(train_sets) - set(zips))
    if unknown or not train_sets:
        raise SystemExit(f"--train-sets {train_sets}: expected some of {sorted(zips)}")
    trained = set().union(*(zip_alphabets(zips[name]) for name in train_sets))
    others = set().union(*(zip_alphabets(path) for name, path in zips.items()
                           if name not in train_sets))
    new = sorted(others - trained)
    if not new:
        raise SystemExit(f"--train-sets {train_sets}: no alphabet is left to test on")
    train_root, test_root = os.path.join(work, "train"), os.path.join(work, "test")
    for root in (train_root, test_root):
        shutil.rmtree(root, ignore_errors=True)
    extract_omniglot([zips[name] for name in train_sets], train_root)
    extract_omniglot(list(zips.values()), test_root, alphabets=new)
    print(f"Omniglot: every character of {', '.join(sorted(trained))} for the pipeline; "
          f"test alphabets never trained on: {', '.join(new)}", flush=True)
    return train_root, test_root


def _subject_number(subject: str) -> int:
    """ORL's subject folders are s1..s40: their number, to sort by."""
    return int(subject.lstrip("s"))


def orl_subjects() -> list[str]:
    """The subjects (s1, s2, ...) of the ORL zip, in number order."""
    with zipfile.ZipFile(ORL_ZIP) as archive:
        subjects = {parts[-2] for parts in (n.split("/") for n in archive.namelist())
                    if len(parts) >= 2 and parts[-1].endswith(".pgm")}
    return sorted(subjects, key=_subject_number)


def orl_folds(subjects: list[str], folds: int, seed: int) -> list[list[str]]:
    """`subjects` shuffled with `seed` and dealt into `folds` folds (as even as their count
    allows: 30 into 5 folds of 6), each sorted by number."""
    if not 2 <= folds <= len(subjects):
        raise SystemExit(f"--folds {folds}: expected 2 to {len(subjects)} (one per subject)")
    shuffled = list(subjects)
    random.Random(seed).shuffle(shuffled)
    return [sorted(shuffled[i::folds], key=_subject_number) for i in range(folds)]


def prepare_orl(work: str, test_subjects: list[str]) -> tuple[str, str]:
    """(train root, test root) under `work`, as class folders: every subject but
    `test_subjects`, and those. Both are rewritten on every call (fresh file times, so the
    pipeline never reuses a cached split of other subjects: PairExampleGen fingerprints file
    sizes and times, not names)."""
    train_root, test_root = os.path.join(work, "train"), os.path.join(work, "test")
    for root in (train_root, test_root):
        shutil.rmtree(root, ignore_errors=True)
    held = set(test_subjects)
    with zipfile.ZipFile(ORL_ZIP) as archive:
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) < 2 or not parts[-1].endswith(".pgm"):
                continue
            subject = parts[-2]
            folder = os.path.join(test_root if subject in held else train_root, subject)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, parts[-1]), "wb") as f:
                f.write(archive.read(name))
    print(f"ORL: {len(os.listdir(train_root))} subjects for the pipeline, held out as the test set: "
          f"{' '.join(sorted(held, key=_subject_number))}", flush=True)
    return train_root, test_root


def class_images(root: str) -> list[tuple[str, str]]:
    """(class, path) of every image under root/<class>/, as the pipeline lists them."""
    from siamese_tfx.components.pair_example_gen import inputs

    classes, _ = inputs.list_class_folders(root, class_depth=1)
    return [(name, os.path.join(root, path))
            for name, paths in sorted(classes.items()) for path in paths]


def every_pair(root: str) -> tuple[list[str], list[str], list[int]]:
    """(lefts, rights, labels) of every unordered pair of images under root/<class>/."""
    lefts, rights, labels = [], [], []
    for (left_class, left), (right_class, right) in itertools.combinations(class_images(root),
                                                                            2):
        lefts.append(left)
        rights.append(right)
        labels.append(int(left_class == right_class))
    return lefts, rights, labels


def member_all_pairs_eers(model_path: str, root: str, members: int) -> list[float]:
    """Each ensemble member's EER over every pair of images under root/<class>/, from the served
    embedding: member i's unit embedding is its i-th slice (scaled by 1/sqrt(members), which no
    EER sees)."""
    import numpy as np

    from siamese_tfx.components.trainer import calibration

    paths = class_images(root)
    embedding = _embed_all(model_path, [p for _, p in paths])
    names = np.array([name for name, _ in paths])
    upper = np.triu_indices(len(paths), 1)
    labels = (names[:, None] == names[None])[upper].astype(int)
    eers = []
    for part in np.split(embedding, members, axis=1):
        distances = np.linalg.norm(part[:, None] - part[None], axis=-1)[upper]
        eers.append(round(float(calibration.equal_error_rate(distances, labels)[0]), 4))
    return eers


def orl_open_set(model_path: str, test_root: str, work: str, exemplars: int = 5
                 ) -> list[dict[str, Any]]:
    """Open-set identification on the held-out subjects, both ways round: the first half of
    them enrolled (their first `exemplars` images, sorted by name, as the gallery), queries
    their other images (mated) and every image of the other half (strangers, never enrolled);
    then the halves swapped. The figures of `siamese-tfx evaluate-identification` (the model's
    calibrated threshold), through the gallery model's own `identify`."""
    from siamese_tfx.pipeline.gallery import evaluate_identification

    subjects = sorted(os.listdir(test_root), key=_subject_number)
    halves = [subjects[:len(subjects) // 2], subjects[len(subjects) // 2:]]
    results = []
    for enrolled, strangers in (halves, halves[::-1]):
        fold = os.path.join(work, "open_set_" + "-".join(enrolled))
        shutil.rmtree(fold, ignore_errors=True)
        for subject in enrolled + strangers:
            images = sorted(os.listdir(os.path.join(test_root, subject)))
            kept = images[:exemplars] if subject in enrolled else []
            for name in images:
                target = os.path.join(fold, "gallery" if name in kept else "queries", subject)
                os.makedirs(target, exist_ok=True)
                shutil.copy(os.path.join(test_root, subject, name), target)
        metrics = evaluate_identification(model_path, os.path.join(fold, "gallery"),
                                          os.path.join(fold, "queries"))
        metrics.update(enrolled=enrolled, strangers=strangers)
        results.append(metrics)
    return results


def _embed_all(model_path: str, paths: list[str]) -> Any:
    """The served embedding (`embed` signature) of every image file in `paths`, in order."""
    import numpy as np
    import tensorflow as tf

    from siamese_tfx.components.contract import signatures
    from siamese_tfx.pipeline import quality

    embed = quality.load_model(model_path).signatures[signatures.EMBED]
    return np.concatenate([
        embed(**{signatures.EMBED_INPUT: tf.constant([quality._read(p)
                                                       for p in paths[i:i + 64]])})[
            signatures.EMBEDDING].numpy() for i in range(0, len(paths), 64)])


def member_oneshot_accuracies(model_path: str, runs_dir: str, members: int) -> dict[str, Any]:
    """One-shot accuracy over the Lake-format runs in `runs_dir` of the whole served embedding
    ("ensemble", which must equal the bench's own figure through `compare`) and of each
    ensemble member alone (its slice of the embedding)."""
    import numpy as np

    from siamese_tfx.pipeline import quality

    correct = np.zeros(members + 1)
    queries = 0
    for run in quality.find_runs(runs_dir):
        exemplars, answers = quality.read_run(run)
        asked = sorted(answers)
        embedding = _embed_all(model_path, [os.path.join(run, p) for p in exemplars + asked])
        truth = np.array([exemplars.index(answers[q]) for q in asked])
        parts = [embedding] + np.split(embedding, members, axis=1)
        for k, part in enumerate(parts):
            known, asking = part[:len(exemplars)], part[len(exemplars):]
            distances = np.linalg.norm(asking[:, None] - known[None], axis=-1)
            correct[k] += np.sum(np.argmin(distances, axis=1) == truth)
        queries += len(asked)
    return {"ensemble": round(float(correct[0] / queries), 4),
            "members": [round(float(c / queries), 4) for c in correct[1:]]}


def train_pipeline(work: str, image_root: str, class_depth: int, args: argparse.Namespace,
                   height: int, width: int, train_pairs: int, eval_pairs: int) -> dict[str, Any]:
    """Runs the whole pipeline (LocalDagRunner) and returns the Trainer's figures and the
    exported model's path."""
    from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, ImageConfig,
                                                        ModelConfig, TrainConfig)
    from siamese_tfx.pipeline import local_runner
    from siamese_tfx.pipeline.config import PipelineConfig

    config = PipelineConfig(
        pipeline_root=os.path.join(work, "pipeline"),
        serving_dir=os.path.join(work, "serving"),
        pipeline_name=f"bench-quality-{os.path.basename(work)}",
        model_name=os.path.basename(work),
        enable_cache=not args.no_cache,
        data=DataConfig(image_root=image_root, class_depth=class_depth,
                        num_train_pairs=train_pairs, num_eval_pairs=eval_pairs,
                        eval_class_fraction=args.eval_class_fraction, seed=args.seed),
        image=ImageConfig(height=height, width=width, channels=1),
        model=ModelConfig(backbone=args.backbone, head=args.head, loss=args.loss,
                          embedding_dim=args.embedding_dim, margin=args.margin,
                          standardize_images=args.standardize_images,
                          ensemble_members=args.ensemble_members,
                          ensemble_class_fraction=args.ensemble_class_fraction),
        train=TrainConfig(train_steps=args.steps, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
                          classes_per_batch=args.classes_per_batch,
                          rotation_classes=args.rotation_classes,
                          calibration_steps=max(1, eval_pairs // args.batch_size),
                          augment=args.augment, flip_horizontal=args.flip_horizontal,
                          curve_every=max(1, args.steps // CURVE_POINTS)),
        # The benchmark measures the model itself; the Evaluator only records its figures.
        eval=EvalConfig.record_only(),
    )
    started = time.time()
    summary = local_runner.run(config, os.path.join(work, "metadata.sqlite"),
                               log_path=os.path.join(work, "tfx.log"))
    seconds = time.time() - started
    trainer_uris = summary.artifacts.get("Trainer", [])
    models = [p for uri in trainer_uris
              for p in glob.glob(os.path.join(uri, "**", "saved_model.pb"), recursive=True)]
    runs = [p for uri in trainer_uris
            for p in glob.glob(os.path.join(uri, "**", "training_metrics.json"), recursive=True)]
    if not models:
        raise RuntimeError(f"the pipeline exported no model; see {work}/tfx.log")
    training = json.load(open(runs[0])) if runs else {}
    return {"model": summary.pushed_path or os.path.dirname(models[0]), "work_dir": work,
            "pipeline_seconds": round(seconds, 1),
            "component_seconds": {c.component: round(c.seconds, 1) for c in summary.components},
            "evaluator_metrics": summary.metrics, "trainer": training,
            "model_run_dir": os.path.dirname(runs[0]) if runs else "",
            "config": config.to_dict()}


def bench_omniglot(args: argparse.Namespace) -> dict[str, Any]:
    from siamese_tfx.pipeline import quality

    cross_alphabet = sorted(args.train_sets) != ["small1", "small2"]
    work = os.path.join(os.path.abspath(args.work_dir),
                        "omniglot" + ("_" + "_".join(args.train_sets) if cross_alphabet else ""))
    os.makedirs(work, exist_ok=True)
    if cross_alphabet:
        train_root, test_root = prepare_omniglot_cross_alphabet(work, args.train_sets)
    else:
        train_root, test_root = prepare_omniglot(work, 20, args.seed)
    result = {"train_sets": args.train_sets, "test_alphabets": sorted(os.listdir(test_root))}
    result.update(train_pipeline(work, train_root, 2, args, args.size, args.size,
                                 args.train_pairs, args.eval_pairs))
    started = time.time()
    lefts, rights, labels = quality.load_pairs(test_root, class_depth=2,
                                               num_pairs=args.test_pairs, seed=args.seed + 1)
    verification = quality.evaluate(result["model"], lefts, rights, labels,
                                     os.path.join(work, "evaluate"))
    runs_dir = os.path.join(work, "oneshot_runs")
    shutil.rmtree(runs_dir, ignore_errors=True)
    quality.make_lake_runs(test_root, runs_dir, num_runs=args.oneshot_runs, way=20,
                           seed=args.seed)
    oneshot = quality.oneshot(result["model"], runs_dir, os.path.join(work, "oneshot"))
    result.update(test_verification=verification, oneshot_20way=oneshot)
    if args.ensemble_members > 1:
        result["oneshot_20way_members"] = member_oneshot_accuracies(
            result["model"], runs_dir, args.ensemble_members)
    if args.more_oneshot_runs:
        # Another, larger draw of runs from the same held-out characters: how much of the
        # figure above is the luck of its 30 runs.
        more_dir = os.path.join(work, "oneshot_runs_more")
        shutil.rmtree(more_dir, ignore_errors=True)
        quality.make_lake_runs(test_root, more_dir, num_runs=args.more_oneshot_runs, way=20,
                               seed=args.seed + 7)
        result["oneshot_20way_more"] = member_oneshot_accuracies(
            result["model"], more_dir, args.ensemble_members)
        result["more_oneshot_runs"] = args.more_oneshot_runs
    result["measure_seconds"] = round(time.time() - started, 1)
    return result


def orl_split(work: str, test_subjects: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Trains the pipeline in `work` on every ORL subject but `test_subjects` and measures the
    model on those: balanced pairs, every pair of their images (the acceptance figure), each
    ensemble member alone, open-set identification."""
    from siamese_tfx.pipeline import quality

    os.makedirs(work, exist_ok=True)
    train_root, test_root = prepare_orl(work, test_subjects)
    height = args.size * 112 // 92 // 4 * 4  # ORL is 92x112 (w x h): keep the aspect.
    result = {"test_subjects": test_subjects}
    result.update(train_pipeline(work, train_root, 1, args, height, args.size,
                                 min(args.train_pairs, 1500), min(args.eval_pairs, 500)))
    started = time.time()
    lefts, rights, labels = quality.load_pairs(test_root, class_depth=1,
                                               num_pairs=min(args.test_pairs, 540),
                                               seed=args.seed + 1)
    result["test_verification"] = quality.evaluate(result["model"], lefts, rights, labels,
                                                   os.path.join(work, "evaluate"))
    # EER over every pair of held-out images (all same pairs, all different pairs): the
    # acceptance figure, and less noisy than the balanced sample's.
    lefts, rights, labels = every_pair(test_root)
    result["test_verification_all_pairs"] = quality.evaluate(
        result["model"], lefts, rights, labels, os.path.join(work, "evaluate_all_pairs"))
    if args.ensemble_members > 1:
        result["test_all_pairs_member_eers"] = member_all_pairs_eers(
            result["model"], test_root, args.ensemble_members)
    result["open_set_identification"] = orl_open_set(result["model"], test_root, work)
    result["measure_seconds"] = round(time.time() - started, 1)
    return result


def bench_orl(args: argparse.Namespace) -> dict[str, Any]:
    """The single split (s25-s30 the test set), or with --folds the cross-validation."""
    if args.folds:
        return bench_orl_folds(args)
    test_subjects = [s for s in orl_subjects() if _subject_number(s) > 24]
    return orl_split(os.path.join(os.path.abspath(args.work_dir), "orl"), test_subjects, args)


def fold_figures(result: dict[str, Any]) -> dict[str, float]:
    """The headline figures of one fold (an orl_split result), the ones averaged over folds."""
    every, balanced = result["test_verification_all_pairs"], result["test_verification"]
    open_set = result["open_set_identification"]
    return {"eer_all_pairs": every["eer"], "auc_all_pairs": every["auc"],
            "eer_balanced": balanced["eer"], "accuracy_balanced": balanced["accuracy"],
            # Both ways round (each half of the fold enrolled once): their mean.
            "open_set_top1": float(sum(o["top1_accuracy"] for o in open_set) / len(open_set)),
            "open_set_dir_at_far_0.01": float(
                sum(o["dir_at_far_0.01"] for o in open_set) / len(open_set))}


def mean_and_std(folds: list[dict[str, float]]) -> dict[str, Any]:
    """Per figure, the mean and the sample standard deviation (n - 1; None for one fold) over
    the folds' fold_figures."""
    import numpy as np

    summary: dict[str, Any] = {}
    for key in folds[0]:
        values = np.array([f[key] for f in folds])
        summary[key] = {"mean": round(float(values.mean()), 4),
                        "std": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None}
    return summary


def fold_plan(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """(validation folds, folds to run) of --folds, --validation-folds and --only-folds; a
    fold option without --folds, a fold out of range, or no test fold left is a SystemExit
    naming the option."""
    if not args.folds:
        for option, value in (("--validation-folds", args.validation_folds),
                              ("--only-folds", args.only_folds)):
            if value is not None:
                raise SystemExit(f"{option}: only with --folds (ORL cross-validation)")
        return [], []
    validation = sorted(set(args.validation_folds if args.validation_folds is not None
                            else DEFAULT_VALIDATION_FOLDS))
    run = (sorted(set(args.only_folds)) if args.only_folds is not None
           else list(range(args.folds)))
    for option, named in (("--validation-folds", validation), ("--only-folds", run)):
        if not named or not set(named) <= set(range(args.folds)):
            raise SystemExit(f"{option} {' '.join(map(str, named))}: expected folds among "
                             f"0-{args.folds - 1} (--folds {args.folds})")
    if len(validation) == args.folds:
        raise SystemExit(f"--validation-folds {' '.join(map(str, validation))}: leaves no test "
                         f"fold of --folds {args.folds}; name fewer")
    return validation, run


def bench_orl_folds(args: argparse.Namespace) -> dict[str, Any]:
    """K-fold cross-validation by subject: orl_split once per fold run, in <work-dir>/
    orl_fold<i>, with the fold's subjects as the test set; the summary in <work-dir>/orl_folds.
    Each fold's result is also saved in its own folder as soon as it is measured."""
    folds = orl_folds(orl_subjects(), args.folds, args.seed)
    validation, run = fold_plan(args)
    base = os.path.abspath(args.work_dir)
    results = []
    for index in run:
        role = "validation" if index in validation else "test"
        print(f"\n== ORL fold {index} of {len(folds)} ({role}): test subjects "
              f"{' '.join(folds[index])}", flush=True)
        started = time.time()
        result = orl_split(os.path.join(base, f"orl_fold{index}"), folds[index], args)
        result.update(fold=index, role=role, figures=fold_figures(result),
                      fold_seconds=round(time.time() - started, 1))
        with open(os.path.join(result["work_dir"], "results.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
        results.append(result)
    summary = {}
    for role, members in (("validation", [r for r in results if r["role"] == "validation"]),
                          ("test", [r for r in results if r["role"] == "test"]),
                          ("all", results)):
        if members:
            summary[role] = {"folds": [r["fold"] for r in members],
                             **mean_and_std([r["figures"] for r in members])}
    work = os.path.join(base, "orl_folds")
    os.makedirs(work, exist_ok=True)
    return {"work_dir": work, "cross_validation": {
        "folds": args.folds, "seed": args.seed, "subjects": folds,
        "validation_folds": validation, "folds_run": run, "summary": summary},
        "fold_results": results}


def _recipe(result: dict[str, Any]) -> str:
    """The recipe a result was trained with, in one line."""
    return (f"{result['config']['model']['backbone']} / "
            f"{result['config']['model']['head']} / {result['config']['model']['loss']}, "
            f"{result['config']['image']['height']}x{result['config']['image']['width']}, "
            f"{result['config']['train']['train_steps']} steps of "
            f"{result['config']['train']['batch_size']} pairs, augment="
            f"{result['config']['train']['augment']}, classes per batch "
            f"{result['config']['train']['classes_per_batch']}, rotation classes "
            f"{result['config']['train']['rotation_classes']}, lr "
            f"{result['config']['train']['learning_rate']} "
            f"({result['config']['train']['lr_schedule']}), standardize images "
            f"{result['config']['model']['standardize_images']}, ensemble members "
            f"{result['config']['model']['ensemble_members']} (class fraction "
            f"{result['config']['model']['ensemble_class_fraction']})")


def _report(name: str, result: dict[str, Any]) -> None:
    if "cross_validation" in result:
        _report_folds(name, result)
        return
    v = result["test_verification"]
    t = result["trainer"]
    print(f"\n== {name}: {_recipe(result)}")
    if "test_alphabets" in result:
        print(f"trained on {', '.join(result['train_sets'])}; test alphabets: "
              f"{', '.join(result['test_alphabets'])}")
    print(f"pipeline wall time {result['pipeline_seconds']:.0f}s (Trainer "
          f"{result['component_seconds'].get('Trainer', 0):.0f}s); measuring "
          f"{result['measure_seconds']:.0f}s")
    if t:
        print(f"calibrated on the pipeline's eval split: threshold {t['threshold']:.4f}, "
              f"accuracy {t['eval_accuracy']:.4f}, AUC {t['eval_auc']:.4f}, EER "
              f"{t['eval_eer']:.4f}")
    print(f"held-out test pairs ({v['pairs']}): accuracy {v['accuracy']:.4f} at the model's "
          f"threshold, precision {v['precision']:.4f}, recall {v['recall']:.4f}, "
          f"AUC {v['auc']:.4f}, EER {v['eer']:.4f}")
    if "test_verification_all_pairs" in result:
        a = result["test_verification_all_pairs"]
        print(f"every pair of held-out images ({a['pairs']}, {a['positive_pairs']} same): "
              f"EER {a['eer']:.4f}, AUC {a['auc']:.4f}")
    for o in result.get("open_set_identification", []):
        print(f"open-set identification, {o['identities']} enrolled ({', '.join(o['enrolled'])};"
              f" {o['exemplars']} exemplars), {o['mated_queries']} mated queries, "
              f"{o['stranger_queries']} of strangers ({', '.join(o['strangers'])}): top-1 "
              f"{o['top1_accuracy']:.4f}, top-5 {o['top5_accuracy']:.4f}, mAP@R "
              f"{o['map_at_r']:.4f}, DIR at the threshold {o['dir_at_threshold']:.4f} with "
              f"strangers called known {o['false_alarm_rate_at_threshold']:.4f}; DIR at FAR 1% "
              f"{o['dir_at_far_0.01']:.4f}, at 10% {o['dir_at_far_0.1']:.4f}")
    for index, member in enumerate(t.get("members", [])):
        print(f"  ensemble member {index} (seed {member['seed']}): eval-split AUC "
              f"{member['eval_auc']:.4f}, EER {member['eval_eer']:.4f}"
              + (f", trained on {member['train_classes']} of {member['train_split_classes']} "
                 "classes" if "train_classes" in member else ""))
    if "test_all_pairs_member_eers" in result:
        print("  each ensemble member alone (its slice of the embedding): EER "
              + ", ".join(f"{e:.4f}" for e in result["test_all_pairs_member_eers"]))
    if "oneshot_20way" in result:
        o = result["oneshot_20way"]
        print(f"20-way within-alphabet one-shot accuracy on held-out characters "
              f"({len(o['runs'])} runs): {o['accuracy']:.4f} (through {o.get('through')})")
        if o.get("through") == "identify":
            print(f"  identify's top-1 (the run's 20 exemplars as the gallery) equals compare's "
                  f"nearest exemplar's accuracy in {o['runs_where_identify_equals_compare']}/"
                  f"{len(o['runs'])} runs ({o['compare_accuracy']:.4f} through compare; "
                  f"{o['queries_where_identify_differs']} queries answered differently)")
    if "oneshot_20way_members" in result:
        m = result["oneshot_20way_members"]
        print(f"  from the served embedding {m['ensemble']:.4f}; each ensemble member alone "
              "(its slice): " + ", ".join(f"{a:.4f}" for a in m["members"]))
    if "oneshot_20way_more" in result:
        m = result["oneshot_20way_more"]
        print(f"on {result['more_oneshot_runs']} other runs of the same characters: "
              f"{m['ensemble']:.4f}" + ("; each member alone: " + ", ".join(
                  f"{a:.4f}" for a in m["members"]) if len(m["members"]) > 1 else ""))


def _report_folds(name: str, result: dict[str, Any]) -> None:
    cv = result["cross_validation"]
    folds = result["fold_results"]
    print(f"\n== {name}, {cv['folds']}-fold cross-validation by subject (seed {cv['seed']}): "
          f"{_recipe(folds[0])}")
    for r in folds:
        f = r["figures"]
        print(f"fold {r['fold']} ({r['role']}; {' '.join(r['test_subjects'])}): EER every pair "
              f"{f['eer_all_pairs']:.4f} (AUC {f['auc_all_pairs']:.4f}), balanced pairs EER "
              f"{f['eer_balanced']:.4f}, accuracy {f['accuracy_balanced']:.4f} at the model's "
              f"threshold; open-set top-1 {f['open_set_top1']:.4f}, DIR at FAR 1% "
              f"{f['open_set_dir_at_far_0.01']:.4f}; {r['fold_seconds']:.0f}s (pipeline "
              f"{r['pipeline_seconds']:.0f}s)")
    labels = {"validation": "validation folds (for choosing a recipe; not a figure to report)",
              "test": "TEST folds (the figure to report, measured once with the chosen recipe)",
              "all": "all folds run"}
    for role, s in cv["summary"].items():
        if role == "all" and len(cv["summary"]) == 2:
            continue  # The folds run are all of one role: the same figures again.
        print(f"{labels[role]} {', '.join(map(str, s['folds']))}: " + ", ".join(
            f"{key} {v['mean']:.4f}" + (f" ± {v['std']:.4f}" if v["std"] is not None else "")
            for key, v in s.items() if key != "folds") + " (mean ± sample std)")


# Points of each training curve per member: each costs one forward pass of the curves' eval
# batches (4 x 64 pairs: 0.25 s of conv4 on 2 cores), so 40 points were 5% of a 600-step run.
CURVE_POINTS = 20

# The recipes the figures in the README were measured with; every option overrides them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "omniglot": dict(backbone="conv4", head="euclidean", loss="triplet", embedding_dim=128,
                     margin=0.5, size=32, steps=6000, batch_size=64, learning_rate=1e-3,
                     lr_schedule="cosine", classes_per_batch=32, rotation_classes=True,
                     augment=True, flip_horizontal=False, standardize_images=False,
                     # 3 members of 6000 steps: one-shot 0.908 (members 0.868-0.895).
                     eval_class_fraction=0.1, eval_pairs=2000, ensemble_members=3,
                     ensemble_class_fraction=1.0),
    "orl": dict(backbone="conv4", head="euclidean", loss="triplet", embedding_dim=128,
                margin=0.5, size=32, steps=3000, batch_size=64, learning_rate=1e-3,
                lr_schedule="cosine", classes_per_batch=16, rotation_classes=False,
                augment=True, flip_horizontal=True, standardize_images=True,
                # 2 of the 24 subjects for calibration (90 distinct same pairs), 22 to train:
                # with 3 members of 3000 steps, EER 2.6% (members 3.3-5.2%); with 20 training
                # subjects every ensemble tried stayed at 5.9-7.0%.
                eval_class_fraction=0.08, eval_pairs=180, ensemble_members=3,
                ensemble_class_fraction=1.0),
}


def with_defaults(args: argparse.Namespace, dataset: str) -> argparse.Namespace:
    """`args` with every option left unset taken from the dataset's recipe (DEFAULTS)."""
    values = vars(args).copy()
    for key, value in DEFAULTS[dataset].items():
        if values.get(key) is None:
            values[key] = value
    return argparse.Namespace(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Unset options take the dataset's recipe: " + "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items())
            for name, recipe in DEFAULTS.items()))
    parser.add_argument("dataset", choices=("omniglot", "orl", "all"))
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "bench_quality"),
                        help="Where everything is written (default: %(default)s).")
    parser.add_argument("--backbone", help="ModelConfig.backbone.")
    parser.add_argument("--head", help="ModelConfig.head.")
    parser.add_argument("--loss", help="ModelConfig.loss.")
    parser.add_argument("--embedding-dim", type=int)
    parser.add_argument("--margin", type=float)
    parser.add_argument("--size", type=int,
                        help="Image width (Omniglot: also height; ORL: height keeps the 92x112 "
                        "aspect).")
    parser.add_argument("--steps", type=int, help="Training steps (of each ensemble member).")
    parser.add_argument("--ensemble-members", type=int,
                        help="ModelConfig.ensemble_members: models trained and served as one.")
    parser.add_argument("--ensemble-class-fraction", type=float,
                        help="ModelConfig.ensemble_class_fraction: each member's share of the "
                        "training classes (bagging by identity).")
    parser.add_argument("--batch-size", type=int, help="Pairs per step.")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"))
    parser.add_argument("--classes-per-batch", type=int,
                        help="TrainConfig.classes_per_batch (triplet class batches; 0: pairs).")
    parser.add_argument("--rotation-classes", action=argparse.BooleanOptionalAction,
                        help="TrainConfig.rotation_classes (square images only).")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                        help="TrainConfig.augment: the affine augmentation.")
    parser.add_argument("--flip-horizontal", action=argparse.BooleanOptionalAction,
                        help="TrainConfig.flip_horizontal (with --augment).")
    parser.add_argument("--standardize-images", action=argparse.BooleanOptionalAction,
                        help="ModelConfig.standardize_images.")
    parser.add_argument("--eval-class-fraction", type=float,
                        help="DataConfig.eval_class_fraction: share of the pipeline's classes "
                        "held out as its eval split (threshold calibration).")
    parser.add_argument("--train-pairs", type=int, default=20000)
    parser.add_argument("--eval-pairs", type=int,
                        help="Pairs of the pipeline's eval split (threshold calibration).")
    parser.add_argument("--test-pairs", type=int, default=2000,
                        help="Balanced pairs of held-out classes to measure verification on.")
    parser.add_argument("--oneshot-runs", type=int, default=30,
                        help="20-way one-shot runs built from held-out Omniglot characters.")
    parser.add_argument("--more-oneshot-runs", type=int, default=100,
                        help="Also measure one-shot on this many other runs (drawn with seed "
                        "+7) of the same characters; 0: none.")
    parser.add_argument("--train-sets", nargs="+", default=["small1", "small2"],
                        choices=("small1", "small2"),
                        help="Omniglot background sets the pipeline trains on. Both (the "
                        "default): 20 characters of each large alphabet are held out as the "
                        "test set. One: the test set is the alphabets only the other set holds "
                        "(cross-alphabet, as Lake et al.'s evaluation alphabets), and the work "
                        "folder is omniglot_<sets>.")
    parser.add_argument("--folds", type=int, default=0,
                        help="ORL: K-fold cross-validation by subject (s1-s30 shuffled with "
                        "--seed into K folds; each fold's subjects the test set of a pipeline "
                        "trained on the others, in <work-dir>/orl_fold<i>). 0 (the default): "
                        "the single split, s25-s30 the test set.")
    parser.add_argument("--validation-folds", type=int, nargs="+",
                        help="With --folds: the VALIDATION folds, the only ones recipes are "
                        "compared on; the others are TEST folds, reported once "
                        f"(default: {' '.join(map(str, DEFAULT_VALIDATION_FOLDS))}).")
    parser.add_argument("--only-folds", type=int, nargs="+",
                        help="With --folds: run only these folds (default: all). For "
                        "comparing recipes, the validation folds only (--only-folds 0 1).")
    parser.add_argument("--no-cache", action="store_true", help="Re-run every component.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fold_plan(args)  # Bad fold options fail now, not after an Omniglot run.
    results = {}
    for name, bench in (("omniglot", bench_omniglot), ("orl", bench_orl)):
        if args.dataset in (name, "all"):
            started = time.time()
            results[name] = bench(with_defaults(args, name))
            results[name]["total_seconds"] = round(time.time() - started, 1)
            with open(os.path.join(results[name]["work_dir"], "results.json"), "w") as f:
                json.dump(results[name], f, indent=1, default=str)
    for name, result in results.items():
        _report(name, result)
        print(f"total {result['total_seconds']:.0f}s; details in "
              f"{os.path.join(result['work_dir'], 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
