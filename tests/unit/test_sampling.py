"""Pair sampling: reproducible from its seed, balanced, class-disjoint splits."""

import pytest

from siamese_tfx.components.pair_example_gen import sampling


def _classes(n_classes=12, n_images=20):
    return {f"c{c:02d}": [f"c{c:02d}/{i}.png" for i in range(n_images)]
            for c in range(n_classes)}


def test_same_seed_same_pairs_other_seed_other_pairs():
    images = _classes()
    first = sampling.sample_pairs(images, 400, seed=7)
    assert first == sampling.sample_pairs(images, 400, seed=7)
    assert first != sampling.sample_pairs(images, 400, seed=8)


@pytest.mark.parametrize("num_pairs", [2, 101, 1000, 3001])
def test_balanced_within_one_percent(num_pairs):
    pairs = sampling.sample_pairs(_classes(), num_pairs, seed=0)
    assert len(pairs) == num_pairs
    positives = sum(p.label for p in pairs)
    assert abs(positives / num_pairs - 0.5) <= 0.01 + 0.5 / num_pairs
    assert positives == num_pairs // 2


def test_labels_match_classes_and_pairs_are_distinct():
    pairs = sampling.sample_pairs(_classes(), 1500, seed=3)
    for p in pairs:
        assert p.left != p.right
        assert p.left.split("/")[0] == p.left_class and p.right.split("/")[0] == p.right_class
        assert (p.left_class == p.right_class) == (p.label == 1)
    keys = {tuple(sorted((p.left, p.right))) for p in pairs}
    assert len(keys) == len(pairs)


def test_near_capacity_takes_every_distinct_pair():
    images = _classes(n_classes=4, n_images=3)  # 4 * C(3,2) = 12 positive pairs possible
    pairs = sampling.sample_pairs(images, 24, seed=0)
    assert sum(p.label for p in pairs) == 12
    assert len({tuple(sorted((p.left, p.right))) for p in pairs}) == 24


def test_too_many_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="allow only 12 distinct positive"):
        sampling.sample_pairs(_classes(n_classes=4, n_images=3), 26, seed=0)


def test_class_split_is_disjoint_reproducible_and_order_free():
    classes = [f"alphabet{a}/character{c:02d}" for a in range(3) for c in range(10)]
    train, evaluation = sampling.split_classes(classes, 0.2, seed=5)
    assert not set(train) & set(evaluation)
    assert set(train) | set(evaluation) == set(classes)
    assert len(evaluation) == 6
    assert (train, evaluation) == sampling.split_classes(list(reversed(classes)), 0.2, seed=5)
    assert evaluation != sampling.split_classes(classes, 0.2, seed=6)[1]


def test_pairs_sampled_per_split_never_share_a_class():
    images = _classes(n_classes=10)
    train, evaluation = sampling.split_classes(list(images), 0.3, seed=1)
    train_pairs = sampling.sample_pairs({c: images[c] for c in train}, 300, seed=1)
    eval_pairs = sampling.sample_pairs({c: images[c] for c in evaluation}, 100, seed=2)
    train_classes = {c for p in train_pairs for c in (p.left_class, p.right_class)}
    eval_classes = {c for p in eval_pairs for c in (p.left_class, p.right_class)}
    assert train_classes and eval_classes and not train_classes & eval_classes


def test_too_few_classes_to_split():
    with pytest.raises(ValueError, match="at least 4 classes"):
        sampling.split_classes(["a", "b", "c"], 0.3, seed=0)
