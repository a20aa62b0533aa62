"""embcore: train behavioural embeddings on event streams and monitor how they evolve.

>>> import numpy as np, embcore
>>> model = embcore.MatrixFactorization(dim=8, seed=1)
>>> stats = model.train(np.array([1, 2], dtype=np.uint64), np.array([7, 7], dtype=np.uint64),
...                     np.array([1.0, 0.0], dtype=np.float32))
>>> stats["events"], stats["new_users"], stats["new_items"]
(2, 2, 1)
"""

from embcore import _core, errors
from embcore._core import (
    EmbeddingTable,
    FactorizationMachine,
    FieldAwareFM,
    MatrixFactorization,
    Monitor,
)
from embcore.errors import (
    CapacityError,
    ConfigError,
    DatasetError,
    EmbcoreError,
    SnapshotError,
    UnknownIdError,
)
from embcore.modes import Trainer

__version__: str = _core.__version__

__all__ = [
    "CapacityError",
    "ConfigError",
    "DatasetError",
    "EmbcoreError",
    "EmbeddingTable",
    "FactorizationMachine",
    "FieldAwareFM",
    "MatrixFactorization",
    "Monitor",
    "SnapshotError",
    "Trainer",
    "UnknownIdError",
    "__version__",
    "errors",
]
