import os
import sys

# The golden study fingerprint (tests/test_golden.py) is bit-exact, and numpy's
# OpenBLAS picks its matrix kernels by CPU: on a CPU with AVX-512 it runs the SkylakeX
# kernels, whose sums differ in the last bits from the AVX2 (Haswell/Zen) kernels the
# fingerprint was recorded with. Pin the AVX2 kernels where the CPU has AVX2, so that
# the fingerprints do not depend on the machine. OpenBLAS reads this when numpy is
# first imported, so it is set before the imports below.


def _cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


if "numpy" not in sys.modules and _cpu_has_avx2():
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def u64(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)
