"""Summarise the KuaiRand-Pure side tables into the constants of ``embcore._calibration``.

Reads ``video_features_basic_pure.csv`` and ``user_features_pure.csv`` (KuaiRand-Pure, Kuaishou;
Gao et al., CIKM 2022; CC BY-SA 4.0) and prints the compact tables that
``python/embcore/_calibration.py`` bakes in. The data directory is not available at run time, so
the simulator only ever sees the printed summaries.

Usage
-----
    python scripts/calibrate_kuairand.py [/work/shared/data/kuairand-pure-features]
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/work/shared/data/kuairand-pure-features")
DURATION_LEVELS = np.linspace(0.0, 1.0, 41)
FANS_LEVELS = np.linspace(0.0, 1.0, 21)
MIN_TAG_SHARE = 0.005


def discrete_power_law_alpha(counts: np.ndarray, x_min: int = 1) -> float:
    """Maximum-likelihood exponent of P(n) = n^-alpha / zeta(alpha, x_min) for n >= x_min.

    >>> discrete_power_law_alpha(np.array([1] * 80 + [2] * 12 + [3] * 5 + [4] * 3))
    2.918
    """
    x = counts[counts >= x_min].astype(np.float64)
    support = np.arange(x_min, 1_000_000, dtype=np.float64)
    log_support = np.log(support)
    sum_log_x = float(np.log(x).sum())
    grid = np.linspace(1.05, 5.0, 3951)
    log_lik = [
        -alpha * sum_log_x - x.size * np.log(np.exp(-alpha * log_support).sum()) for alpha in grid
    ]
    return float(grid[int(np.argmax(log_lik))])


def hill_tail_index(values: np.ndarray, tail_fraction: float) -> float:
    """Hill estimator of the Pareto tail index over the top ``tail_fraction`` of ``values``."""
    ordered = np.sort(values[values > 0])[::-1]
    k = max(int(ordered.size * tail_fraction), 2)
    return float(k / np.log(ordered[:k] / ordered[k]).sum())


def main(data_dir: Path) -> None:
    with open(data_dir / "video_features_basic_pure.csv", newline="") as handle:
        videos = list(csv.DictReader(handle))
    with open(data_dir / "user_features_pure.csv", newline="") as handle:
        users = list(csv.DictReader(handle))
    print(f"# {len(videos)} videos, {len(users)} users")

    durations_s = np.array(
        [float(v["video_duration"]) / 1000.0 for v in videos if v["video_duration"]]
    )
    quantiles = np.quantile(durations_s, DURATION_LEVELS)
    print(f"# duration: {durations_s.size} videos with a duration")
    print("DURATION_QUANTILE_LEVELS = " + repr(tuple(round(float(q), 4) for q in DURATION_LEVELS)))
    print("DURATION_QUANTILES_SECONDS = " + repr(tuple(round(float(q), 2) for q in quantiles)))

    per_author = np.array(list(Counter(v["author_id"] for v in videos).values()))
    alpha = discrete_power_law_alpha(per_author)
    print(f"# {per_author.size} authors; videos per author histogram:")
    print("#   " + repr(sorted(Counter(per_author.tolist()).items())))
    print(f"VIDEOS_PER_AUTHOR_ALPHA = {alpha:.3f}")
    print(f"CREATOR_ZIPF_EXPONENT = {1.0 / (alpha - 1.0):.3f}  # rank exponent s = 1 / (alpha - 1)")

    fans = np.array([float(u["fans_user_num"]) for u in users if u["is_video_author"] == "1"])
    for fraction in (0.01, 0.05, 0.1, 0.2):
        print(f"# fans Hill tail index (top {fraction:.0%}): {hill_tail_index(fans, fraction):.3f}")
    print(f"FANS_TAIL_INDEX = {hill_tail_index(fans, 0.1):.3f}  # top 10% of {fans.size} authors")
    fans_quantiles = np.quantile(np.log10(1.0 + fans), FANS_LEVELS)
    print(
        "AUTHOR_LOG10_FANS_QUANTILES = " + repr(tuple(round(float(q), 3) for q in fans_quantiles))
    )

    primary_tags = Counter(v["tag"].split(",")[0] for v in videos)
    total = sum(primary_tags.values())
    kept = [
        (int(tag), count / total)
        for tag, count in primary_tags.most_common()
        if tag and count / total >= MIN_TAG_SHARE
    ]
    other = 1.0 - sum(share for _, share in kept)
    print(f"# {len(primary_tags)} primary tags; kept {len(kept)} with share >= {MIN_TAG_SHARE}")
    print("TAG_SHARES = " + repr(tuple((tag, round(share, 4)) for tag, share in kept)))
    print(f"# remaining share (rare tags and untagged) folded into tag -1: {other:.4f}")

    degrees = Counter(u["user_active_degree"] for u in users)
    print(
        "USER_ACTIVE_DEGREE_SHARES = "
        + repr(tuple((name, round(count / len(users), 5)) for name, count in degrees.most_common()))
    )
    for name in degrees:
        follows = np.array(
            [float(u["follow_user_num"]) for u in users if u["user_active_degree"] == name]
        )
        print(
            f"#   {name}: median follows {np.median(follows):.0f} "
            f"(follows do not separate the classes; activity multipliers are assumed)"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
