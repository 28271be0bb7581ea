"""Choosing the match threshold on the eval split."""

from __future__ import annotations

import numpy as np


def best_threshold(distances: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The distance threshold that maximises verification accuracy (match: d <= threshold).

    Candidates are the midpoints between consecutive sorted distances (and both ends). Labels:
    1 = same identity. Returns (threshold, accuracy at it).
    """
    cuts, valid, true_matches, false_matches, _, num_different = _sorted_cuts(distances, labels)
    # Threshold between d[i-1] and d[i]: the first i pairs are called matches; a cut between
    # equal distances is not a real choice (masked out).
    correct = true_matches + (num_different - false_matches)
    best = int(np.argmax(np.where(valid, correct, -1)))
    return float(max(cuts[best], 0.0)), float(correct[best] / (len(cuts) - 1))


def _sorted_cuts(distances: np.ndarray, labels: np.ndarray):
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if distances.size == 0 or distances.size != labels.size:
        raise ValueError(f"need equal, non-empty distances and labels; got "
                         f"{distances.size} and {labels.size}")
    order = np.argsort(distances, kind="stable")
    d, y = distances[order], labels[order]
    cuts = np.concatenate([[d[0] - 1e-6], (d[:-1] + d[1:]) / 2.0, [d[-1] + 1e-6]])
    valid = np.concatenate([[True], d[:-1] < d[1:], [True]])
    true_matches = np.concatenate([[0], np.cumsum(y)])
    false_matches = np.concatenate([[0], np.cumsum(~y)])
    return cuts, valid, true_matches, false_matches, int(y.sum()), int((~y).sum())


def threshold_for_false_match_rate(distances: np.ndarray, labels: np.ndarray,
                                   target: float) -> float:
    """The largest distance threshold (match: d <= threshold) whose false-match rate (share of
    different-identity pairs called a match; label 1 = same identity) is at most `target`."""
    cuts, valid, _, false_matches, _, negatives = _sorted_cuts(distances, labels)
    rate = false_matches / max(negatives, 1)
    ok = np.flatnonzero(valid & (rate <= target))
    return float(max(cuts[ok[-1]], 0.0))


def roc_points(distances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-match rates, true-match rates) at every distinct threshold, from nothing matched
    to everything matched (match: d <= threshold; label 1 = same identity)."""
    _, valid, true_matches, false_matches, positives, negatives = _sorted_cuts(distances, labels)
    return (false_matches[valid] / max(negatives, 1), true_matches[valid] / max(positives, 1))


def auc(distances: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC: the chance a same pair is closer than a different pair (ties count half)."""
    far, tar = roc_points(distances, labels)
    return float(np.trapz(tar, far))


def equal_error_rate(distances: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false-match and false-non-match rates cross, interpolated
    linearly between the two ROC points around the crossing."""
    cuts, valid, true_matches, false_matches, positives, negatives = _sorted_cuts(
        distances, labels)
    cuts = cuts[valid]
    fmr = false_matches[valid] / max(negatives, 1)
    fnmr = 1.0 - true_matches[valid] / max(positives, 1)
    gap = fmr - fnmr  # rises from -1 (nothing matched) to +1 (everything matched)
    i = int(np.argmax(gap >= 0))
    if i == 0:
        return float(fmr[0]), float(max(cuts[0], 0.0))
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = (1 - w) * fmr[i - 1] + w * fmr[i]
    return float(eer), float(max((1 - w) * cuts[i - 1] + w * cuts[i], 0.0))


def verification_metrics(distances: np.ndarray, labels: np.ndarray,
                         threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, false-match rate at `threshold` (match: d <= threshold;
    label 1 = same identity), and the threshold-free AUC and EER."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    match = d <= threshold
    tp, fp = int(np.sum(match & y)), int(np.sum(match & ~y))
    fn, tn = int(np.sum(~match & y)), int(np.sum(~match & ~y))
    eer, eer_threshold = equal_error_rate(d, y)
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / d.size,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "false_match_rate": fp / (fp + tn) if fp + tn else 0.0,
        "auc": auc(d, y),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "pairs": int(d.size),
        "positive_pairs": int(y.sum()),
    }


def calibrate(distances: np.ndarray, labels: np.ndarray, mode: str = "accuracy",
              target_false_match_rate: float = 0.01) -> dict[str, float]:
    """The match threshold by `mode` (TrainConfig.threshold_mode: "accuracy" maximises accuracy,
    "false_match_rate" meets `target_false_match_rate`) and the metrics at it."""
    if mode == "accuracy":
        threshold, _ = best_threshold(distances, labels)
    elif mode == "false_match_rate":
        threshold = threshold_for_false_match_rate(distances, labels, target_false_match_rate)
    else:
        raise ValueError(f"unknown threshold mode {mode!r}")
    return verification_metrics(distances, labels, threshold)
