"""The ``embcore`` command line: ``study``, ``replay`` and ``bench``.

Each subcommand lives in its own module and exposes ``run(args) -> int``;
this file only declares the arguments. Configuration errors exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise argparse.ArgumentTypeError("give at least one mode, e.g. realtime,batch")
    return modes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embcore",
        description="Train behavioural embeddings on event streams and monitor how they evolve.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    study = sub.add_parser(
        "study",
        help="simulate a short-video platform and compare training modes end to end",
        description="Run the batch vs real-time study on the simulator and write "
        "metrics.json, report.html and one PNG per figure.",
    )
    study.add_argument("--out", default="embcore-study", help="output directory")
    study.add_argument("--scale", default="default", choices=["tiny", "small", "default", "large"])
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--threads", type=_positive_int, default=1)
    study.add_argument("--modes", type=_modes, default=["realtime", "batch"])
    study.add_argument(
        "--model",
        default="mf",
        choices=["mf", "ffm", "fm"],
        help="mf: matrix factorization; ffm: field-aware FM over user, item, creator, tag, hour "
        "(the paper's model); fm: factorisation machine over the same fields",
    )
    study.add_argument("--period", default="6h", help="batch retraining period, e.g. 6h, 90m")
    study.add_argument("--epochs", type=_positive_int, default=1)
    study.add_argument("--learning-rate", type=float, default=None)
    study.add_argument("--dim", type=_positive_int, default=None, help="embedding width")
    study.add_argument(
        "--init-scale", type=float, default=None, help="initial rows uniform in [-s, s]"
    )
    study.add_argument("--alpha", type=float, default=None, help="maturity threshold on d_cos")
    study.add_argument(
        "--track-rate", type=float, default=None, help="share of items whose trajectories are kept"
    )
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    replay = sub.add_parser(
        "replay",
        help="replay a real interaction log through each training mode",
        description="Replay a logged event stream (MovieLens, KuaiRand, KuaiRec, CSV, "
        "Parquet) through each mode with progressive validation.",
    )
    replay.add_argument("log", help="path of the log file")
    replay.add_argument("--format", default="auto")
    replay.add_argument("--out", default="embcore-replay")
    replay.add_argument("--modes", type=_modes, default=["realtime", "batch"])
    replay.add_argument("--period", default="6h")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--limit", type=_positive_int, default=None)
    replay.add_argument("--threads", type=_positive_int, default=1)
    replay.add_argument("--epochs", type=_positive_int, default=None)
    replay.add_argument("--learning-rate", type=float, default=None)
    replay.add_argument(
        "--fresh-interactions",
        type=_positive_int,
        default=None,
        help="an item is fresh for its first N interactions",
    )
    replay.add_argument(
        "--fresh-seconds",
        type=_positive_int,
        default=None,
        help="an item is fresh for this long after its first event",
    )
    replay.add_argument("--no-progress", action="store_true")

    bench = sub.add_parser(
        "bench",
        help="measure training, insert, snapshot and scan throughput against baselines",
        description="Run the mf-1m benchmark suite of BENCHMARKS.md and write JSON.",
    )
    bench.add_argument("--quick", action="store_true", help="a smaller version, under a minute")
    bench.add_argument("--out", default=None, help="write the JSON results to this file")
    bench.add_argument(
        "--only",
        default=None,
        help="comma-separated benchmark groups to run, from: training, insert, lifecycle, "
        "snapshot, numpy, peers, probe, drift, ffm (default: all)",
    )
    return parser


def _version() -> str:
    from embcore import __version__

    return f"embcore {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "study":
        from embcore import study

        return study.run(args)
    if args.command == "replay":
        replay = importlib.import_module("embcore.replay")
        return int(replay.run(args))
    from embcore import bench

    return bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
