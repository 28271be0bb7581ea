"""Closed- and open-set identification metrics over a gallery (numpy only).

Queries whose identity is enrolled are "mated"; the others are strangers. Given every query's
identities ranked by distance (what `identify` returns with k = all identities) and its
distances to every gallery exemplar:

- top-1 / top-5 accuracy: the mated query's identity is among the first 1 / 5 identities.
- recall@k: at least one of the k nearest exemplars shows the query's identity (mated queries).
- mAP@R (Musgrave et al. 2020): with R the gallery's exemplars of the query's identity, the
  mean over mated queries of (1/R) * sum over the first R exemplars of precision@i at the
  correct ones.
- open-set detection and identification rate (DIR) at a false-alarm rate f: the threshold t is
  set so that at most a fraction f of strangers have their nearest identity within t; DIR is
  the fraction of mated queries whose nearest identity is correct AND within t. Also at the
  model's calibrated threshold, with the false-alarm rate there (strangers called known).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FALSE_ALARM_RATES = (0.01, 0.1)
RECALL_AT = (1, 5, 10)


def _threshold_at_false_alarm_rate(stranger_best: np.ndarray, rate: float) -> float:
    """The largest threshold at which at most `rate` of the strangers are called known
    (known: distance <= threshold)."""
    ordered = np.sort(stranger_best)
    allowed = int(np.floor(rate * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float("inf")
    return float(np.nextafter(ordered[allowed], -np.inf))


def identification_metrics(
    query_labels: Sequence[str],
    ranked_labels: np.ndarray,
    ranked_distances: np.ndarray,
    exemplar_labels: Sequence[str],
    exemplar_distances: np.ndarray,
    threshold: float,
) -> dict:
    """The metrics above. `ranked_labels`, `ranked_distances`: [Q, identities] nearest first;
    `exemplar_distances`: [Q, exemplars] to the exemplars labelled `exemplar_labels`;
    `threshold`: the model's calibrated match threshold."""
    query_labels = np.asarray(query_labels, dtype=object)
    exemplar_labels = np.asarray(exemplar_labels, dtype=object)
    enrolled = set(exemplar_labels.tolist())
    mated = np.array([label in enrolled for label in query_labels], dtype=bool)
    hits = ranked_labels == query_labels[:, None]
    best = ranked_distances[:, 0]
    correct_top1 = hits[:, 0]
    results: dict = {"queries": int(len(query_labels)), "mated_queries": int(mated.sum()),
                     "stranger_queries": int((~mated).sum()),
                     "identities": len(enrolled), "exemplars": int(len(exemplar_labels)),
                     "threshold": float(threshold)}
    if mated.any():
        results["top1_accuracy"] = float(hits[mated, :1].any(axis=1).mean())
        results["top5_accuracy"] = float(hits[mated, :5].any(axis=1).mean())
        order = np.argsort(exemplar_distances[mated], axis=1, kind="stable")
        relevant = exemplar_labels[order] == query_labels[mated][:, None]
        for k in RECALL_AT:
            results[f"recall_at_{k}"] = float(relevant[:, :k].any(axis=1).mean())
        r = relevant.sum(axis=1)
        precisions = []
        for row, count in zip(relevant, r):
            top = row[:count]
            precision_at_i = np.cumsum(top) / np.arange(1, count + 1)
            precisions.append(float((precision_at_i * top).sum() / count))
        results["map_at_r"] = float(np.mean(precisions))
        results["dir_at_threshold"] = float((correct_top1 & (best <= threshold))[mated].mean())
    if (~mated).any():
        strangers = best[~mated]
        results["false_alarm_rate_at_threshold"] = float((strangers <= threshold).mean())
        for rate in FALSE_ALARM_RATES:
            t = _threshold_at_false_alarm_rate(strangers, rate)
            key = f"far_{rate:g}"
            results[f"threshold_at_{key}"] = t
            if mated.any():
                results[f"dir_at_{key}"] = float((correct_top1 & (best <= t))[mated].mean())
    return results
