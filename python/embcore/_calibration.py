"""Constants calibrated from the KuaiRand-Pure side tables, used by :mod:`embcore.sim`.

Source: KuaiRand-Pure (Kuaishou Technology; Chongming Gao, Shijun Li, Yuan Zhang, Jiawei Chen,
Biao Li, Wenqiang Lei, Peng Jiang, Xiangnan He, "KuaiRand: An Unbiased Sequential Recommendation
Dataset with Randomly Exposed Videos", CIKM 2022, https://kuairand.com), files
``video_features_basic_pure.csv`` (7,583 videos, 6,510 authors) and ``user_features_pure.csv``
(27,285 users), copied from Applied-Machine-Learning-Lab/KuaiSim at commit 2ae32aa2.
Licence: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). The tables below are
summaries (an adaptation) of that data and are shared under the same licence, with attribution to
the KuaiRand authors.

Produced by ``python scripts/calibrate_kuairand.py``; rerun it and paste its output to refresh.
Only the summaries live here; the raw files are never read at run time.

>>> from embcore import _calibration
>>> _calibration.DURATION_QUANTILES_SECONDS[20]  # median video duration, seconds
81.17
"""

from __future__ import annotations

# Empirical inverse CDF of video_duration (converted from ms to s), 7,344 videos with a duration.
DURATION_QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 40 for i in range(41))
DURATION_QUANTILES_SECONDS: tuple[float, ...] = (
    5.0, 8.83, 10.73, 12.57, 14.59, 16.5, 18.8, 21.1, 24.49, 28.32, 31.95, 36.52, 40.77, 46.0,
    51.83, 58.28, 62.73, 67.0, 71.14, 76.0, 81.17, 85.73, 89.42, 94.77, 100.15, 107.74, 114.42,
    121.43, 129.82, 138.84, 148.23, 159.48, 170.3, 183.25, 197.37, 214.25, 237.83, 265.79,
    303.46, 385.33, 1177.72,
)  # fmt: skip

# Videos per author: histogram {1: 5661, 2: 718, 3: 90, 4: 24, 5: 7, 6: 5, 7: 3, 8: 1, 26: 1};
# discrete power-law MLE P(n) ~ n^-alpha (n >= 1), alpha = 3.488. A Zipf rank law of upload
# rates p(rank) ~ rank^-s gives a count tail with alpha = 1 + 1/s, so s = 1 / (alpha - 1).
VIDEOS_PER_AUTHOR_ALPHA: float = 3.488
CREATOR_ZIPF_EXPONENT: float = 0.402

# Audience of authors: fans_user_num of the 22,276 users with is_video_author = 1.
# Hill tail index over the top 10%: 1.21 (0.97 to 1.21 for the top 1% to 20%).
FANS_TAIL_INDEX: float = 1.210
AUTHOR_LOG10_FANS_LEVELS: tuple[float, ...] = tuple(i / 20 for i in range(21))
AUTHOR_LOG10_FANS_QUANTILES: tuple[float, ...] = (
    0.0, 0.699, 0.954, 1.079, 1.23, 1.362, 1.477, 1.591, 1.699, 1.799, 1.914, 2.021, 2.13,
    2.241, 2.358, 2.473, 2.601, 2.734, 2.892, 3.13, 6.298,
)  # fmt: skip

# Primary (first-listed) tag of each video: the 29 tags with share >= 0.5%; the remaining 5.01%
# (15 rare tags and 96 untagged videos) is folded into tag -1.
TAG_SHARES: tuple[tuple[int, float], ...] = (
    (39, 0.1895), (3, 0.0965), (20, 0.089), (12, 0.0799), (9, 0.0551), (6, 0.0498),
    (7, 0.0448), (2, 0.0381), (1, 0.0335), (15, 0.0323), (17, 0.029), (8, 0.0233),
    (11, 0.0231), (62, 0.0212), (28, 0.0191), (25, 0.0179), (19, 0.0127), (4, 0.0119),
    (5, 0.0115), (10, 0.0115), (26, 0.0108), (18, 0.0078), (38, 0.0071), (27, 0.0063),
    (67, 0.0061), (14, 0.0057), (36, 0.0054), (24, 0.0054), (21, 0.0054), (-1, 0.0501),
)  # fmt: skip

# user_active_degree shares over 27,285 users (calibrated), each with an activity multiplier
# (ASSUMED: the side tables hold no request counts, and follow counts barely differ between the
# classes, so the multipliers follow the class names: relative expected requests per user).
USER_ACTIVITY_CLASSES: tuple[tuple[str, float, float], ...] = (
    ("full_active", 0.65820, 1.0),
    ("high_active", 0.22569, 0.5),
    ("middle_active", 0.07817, 0.25),
    ("2_14_day_new", 0.02327, 0.3),
    ("low_active", 0.01100, 0.1),
    ("single_low_active", 0.00249, 0.05),
    ("30day_retention", 0.00055, 0.1),
    ("day_new", 0.00040, 0.3),
    ("UNKNOWN", 0.00022, 0.25),
)

# Item lifetime (how long an item keeps receiving views) is NOT calibrated: the side tables hold
# no exposure or view counts and every upload_dt falls in 2022-04-09..11, so SimConfig keeps
# item_lifetime_seconds = None (every item lives max_item_age_seconds; docs/simulator.md).

__all__ = [
    "AUTHOR_LOG10_FANS_LEVELS",
    "AUTHOR_LOG10_FANS_QUANTILES",
    "CREATOR_ZIPF_EXPONENT",
    "DURATION_QUANTILES_SECONDS",
    "DURATION_QUANTILE_LEVELS",
    "FANS_TAIL_INDEX",
    "TAG_SHARES",
    "USER_ACTIVITY_CLASSES",
    "VIDEOS_PER_AUTHOR_ALPHA",
]
