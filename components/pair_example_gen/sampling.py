"""Class splits and balanced pair sampling, reproducible from a seed.

Pure Python (no Beam, no TensorFlow) so the guarantees the pipeline relies on — the same seed
gives the same pairs, pairs are half positive, and the train and eval splits never share a class —
are tested directly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from siamese_tfx.components.contract import errors

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)


@dataclass(frozen=True, order=True)
class Pair:
    """One labelled pair. label 1: same identity (class); 0: different."""

    left: str
    right: str
    label: int
    left_class: str
    right_class: str


def split_classes(
    classes: Sequence[str], eval_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Splits classes into disjoint (train, eval) lists, at least one class in each.

    The eval share is rounded to the nearest class; the choice depends only on the seed and the
    set of class names (not their order).
    """
    ordered = sorted(set(classes))
    if len(ordered) < 4:
        raise errors.DataError(
            f"need at least 4 classes to hold some out for evaluation "
            f"(negative pairs need 2 classes in each split); found {len(ordered)}: {ordered}"
        )
    num_eval = min(max(2, round(len(ordered) * eval_fraction)), len(ordered) - 2)
    random.Random(f"split:{seed}").shuffle(ordered)
    return sorted(ordered[num_eval:]), sorted(ordered[:num_eval])


def pair_capacity(class_to_images: Mapping[str, Sequence[str]]) -> tuple[int, int]:
    """How many distinct (positive, negative) pairs the classes' images allow."""
    sizes = [len(set(paths)) for paths in class_to_images.values()]
    total = sum(sizes)
    return (sum(math.comb(n, 2) for n in sizes),
            (total * total - sum(n * n for n in sizes)) // 2)


def max_balanced_pairs(class_to_images: Mapping[str, Sequence[str]]) -> int:
    """The largest pair count `sample_pairs` can draw from these classes (half positive)."""
    positives, negatives = pair_capacity(class_to_images)
    return min(2 * positives + 1, 2 * negatives)


def sample_pairs(
    class_to_images: Mapping[str, Sequence[str]], num_pairs: int, seed: int
) -> list[Pair]:
    """Samples `num_pairs` distinct pairs, half positive (the odd one is negative).

    Positive pairs pick a class uniformly among classes with at least two images, then two
    distinct images of it; negative pairs pick two distinct classes, then one image of each.
    A pair and its mirror image count as the same pair.

    Raises:
      errors.DataError: when the classes cannot give that many distinct pairs of either kind.
    """
    images = {c: sorted(set(paths)) for c, paths in class_to_images.items() if paths}
    classes = sorted(images)
    num_pos = num_pairs // 2
    num_neg = num_pairs - num_pos
    pos_classes = [c for c in classes if len(images[c]) >= 2]
    pos_capacity, neg_capacity = pair_capacity(images)
    total = sum(len(v) for v in images.values())
    if num_pos > pos_capacity or num_neg > neg_capacity:
        raise errors.DataError(
            f"asked for {num_pos} positive and {num_neg} negative pairs, but {len(classes)} "
            f"classes with {total} images allow only {pos_capacity} distinct positive and "
            f"{neg_capacity} distinct negative pairs (at most {max_balanced_pairs(images)} "
            "pairs in all); lower the pair count or add images"
        )
    rng = random.Random(f"pairs:{seed}")

    def positive() -> Pair:
        cls = rng.choice(pos_classes)
        a, b = rng.sample(images[cls], 2)
        return Pair(a, b, 1, cls, cls)

    def all_positives() -> list[Pair]:
        return [
            Pair(a, b, 1, c, c)
            for c in pos_classes
            for i, a in enumerate(images[c])
            for b in images[c][i + 1 :]
        ]

    def negative() -> Pair:
        ca, cb = rng.sample(classes, 2)
        return Pair(rng.choice(images[ca]), rng.choice(images[cb]), 0, ca, cb)

    def all_negatives() -> list[Pair]:
        return [
            Pair(a, b, 0, ca, cb)
            for i, ca in enumerate(classes)
            for cb in classes[i + 1 :]
            for a in images[ca]
            for b in images[cb]
        ]

    pairs = _draw_distinct(rng, num_pos, pos_capacity, positive, all_positives)
    pairs += _draw_distinct(rng, num_neg, neg_capacity, negative, all_negatives)
    rng.shuffle(pairs)
    return pairs


def _draw_distinct(
    rng: random.Random,
    count: int,
    capacity: int,
    draw: Callable[[], Pair],
    enumerate_all: Callable[[], list[Pair]],
) -> list[Pair]:
    """`count` distinct pairs: rejection sampling while that is cheap, else a sample of all."""
    if count * 2 > capacity:
        return rng.sample(enumerate_all(), count)
    seen: set[tuple[str, str]] = set()
    out: list[Pair] = []
    while len(out) < count:
        pair = draw()
        key = (pair.left, pair.right) if pair.left <= pair.right else (pair.right, pair.left)
        if key not in seen:
            seen.add(key)
            out.append(pair)
    return out
