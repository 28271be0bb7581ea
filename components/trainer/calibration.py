"""Choosing the match threshold on the eval split."""

from __future__ import annotations

import numpy as np


def best_threshold(distances: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The distance threshold that maximises verification accuracy (match: d <= threshold).

    Candidates are the midpoints between consecutive sorted distances (and both ends). Labels:
    1 = same identity. Returns (threshold, accuracy at it).
    """
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if distances.size == 0 or distances.size != labels.size:
        raise ValueError(f"need equal, non-empty distances and labels; got "
                         f"{distances.size} and {labels.size}")
    order = np.argsort(distances, kind="stable")
    d, y = distances[order], labels[order]
    # Threshold between d[i-1] and d[i]: the first i pairs are called matches.
    true_matches = np.concatenate([[0], np.cumsum(y)])  # same pairs called match
    false_matches = np.concatenate([[0], np.cumsum(~y)])
    correct = true_matches + (np.count_nonzero(~y) - false_matches)
    cuts = np.concatenate([[d[0] - 1e-6], (d[:-1] + d[1:]) / 2.0, [d[-1] + 1e-6]])
    # Ties: a cut between equal distances is not a real choice; mask it out.
    valid = np.concatenate([[True], d[:-1] < d[1:], [True]])
    best = int(np.argmax(np.where(valid, correct, -1)))
    return float(max(cuts[best], 0.0)), float(correct[best] / d.size)
