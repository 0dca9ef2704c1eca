"""Paired statistics for comparing two configs on the same rows, in plain Python (no numpy or
scipy needed): a paired bootstrap interval for a mean difference, McNemar's exact test for
0/1 outcomes, and a sign-flip permutation test for any scores. Every random draw comes from
a seeded generator, so the same inputs give the same numbers."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

#: (sum of differences, number of pairs) of one cluster: a row and its runs
Cluster = tuple[float, int]


def mean_difference(clusters: Sequence[Cluster]) -> float:
    pairs = sum(n for _, n in clusters)
    return sum(d for d, _ in clusters) / pairs if pairs else math.nan


def bootstrap_ci(
    clusters: Sequence[Cluster], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean difference, resampling whole rows: the runs of one
    row are not independent (same prompt), so a row is the unit that is drawn."""
    if not clusters:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    sums = [d for d, _ in clusters]
    counts = [n for _, n in clusters]
    k = len(clusters)
    means = []
    for _ in range(resamples):
        picks = rng.choices(range(k), k=k)
        pairs = sum(map(counts.__getitem__, picks))
        means.append(sum(map(sums.__getitem__, picks)) / pairs)
    means.sort()
    tail = (1.0 - confidence) / 2
    return (_quantile(means, tail), _quantile(means, 1.0 - tail))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided p-value of McNemar's exact test: of the pairs where exactly one side
    passed (``a_only`` + ``b_only``), is the split further from even than chance makes it?
    The binomial tail is summed in log space, so thousands of pairs do not overflow."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(_log_comb(n, i) + log_half_n) for i in range(k + 1))
    return min(1.0, 2 * tail)


def sign_flip_test(row_deltas: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of a paired permutation test: under "no difference", each row's
    difference is as likely to have either sign. (count + 1) / (resamples + 1), so never 0."""
    observed = abs(sum(row_deltas))
    if observed == 0:
        return 1.0
    rng = random.Random(seed)
    k = len(row_deltas)
    extreme = 0
    for _ in range(resamples):
        bits = rng.getrandbits(k)
        total = sum(d if bits >> i & 1 else -d for i, d in enumerate(row_deltas))
        # a tolerance: float sums of the same terms in another order differ in the last bits
        extreme += abs(total) >= observed - 1e-12
    return (extreme + 1) / (resamples + 1)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between the two nearest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
