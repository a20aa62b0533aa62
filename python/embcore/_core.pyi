"""Typed stub of the Rust extension module ``embcore._core``."""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, Self

import numpy as np
import numpy.typing as npt

__version__: str
build_profile: str
DEFAULT_CAPACITY: int
SNAPSHOT_VERSION: int

IdArray = npt.NDArray[np.uint64] | npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

class EmbcoreError(ValueError): ...
class ConfigError(EmbcoreError): ...
class DatasetError(EmbcoreError): ...
class CapacityError(EmbcoreError): ...
class SnapshotError(EmbcoreError): ...
class UnknownIdError(EmbcoreError, KeyError): ...

class EmbeddingTable:
    def __init__(
        self,
        dim: int,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        eps: float = 1e-8,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = ...,
        ttl: int | None = None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        keep_floor: int = 0,
        eviction: str = "lru",
        min_count: int = 1,
    ) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def lifecycle(self) -> dict[str, Any] | None: ...
    @property
    def version(self) -> int: ...
    @property
    def unadmitted_events(self) -> int: ...
    def evict(self, now: int, budget: int = 100_000) -> dict[str, Any]: ...
    def changed_since(self, version: int) -> dict[str, Any]: ...
    @property
    def seed(self) -> int: ...
    @property
    def init_scale(self) -> float: ...
    @property
    def optimizer(self) -> dict[str, Any]: ...
    @property
    def nbytes(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int) -> bool: ...
    def ids(self) -> npt.NDArray[np.uint64]: ...
    def weights(self) -> npt.NDArray[np.float32]: ...
    def view(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...
    def metadata(self) -> dict[str, npt.NDArray[Any]]: ...
    def optimizer_state(self) -> npt.NDArray[np.float32]: ...
    def get(
        self, ids: IdArray, default: float | FloatArray | None = None
    ) -> npt.NDArray[np.float32]: ...
    def set(self, ids: IdArray, rows: FloatArray, timestamp: int = 0) -> int: ...
    def insert(self, ids: IdArray, timestamp: int = 0, threads: int = 1) -> int: ...
    def norms(self) -> npt.NDArray[np.float32]: ...
    def copy(self) -> EmbeddingTable: ...
    def save(self, path: str | PathLike[str]) -> int: ...
    @staticmethod
    def load(path: str | PathLike[str], capacity: int | None = None) -> EmbeddingTable: ...

Columns = Mapping[str, IdArray] | npt.NDArray[np.uint64] | npt.NDArray[np.int64]

class FieldModel:
    """The one model of the engine; MatrixFactorization, FieldAwareFM and
    FactorizationMachine are its classes (not constructed directly)."""

    @property
    def fields(self) -> list[str]: ...
    @property
    def dim(self) -> int: ...
    @property
    def row_dim(self) -> int: ...
    @property
    def loss(self) -> str: ...
    @property
    def bias(self) -> bool: ...
    @property
    def global_bias(self) -> float: ...
    @property
    def events_seen(self) -> int: ...
    @property
    def optimizer(self) -> dict[str, Any]: ...
    @property
    def tables(self) -> dict[str, EmbeddingTable]: ...
    def table(self, field: str) -> EmbeddingTable: ...
    def train(
        self,
        columns: Columns,
        labels: FloatArray,
        weights: FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Monitor | None = None,
        monitor_field: str | None = None,
        monitor_against: str | None = None,
    ) -> dict[str, Any]: ...
    def score(self, columns: Columns) -> npt.NDArray[np.float32]: ...
    def predict(self, columns: Columns) -> npt.NDArray[np.float32]: ...
    def train_columns(
        self,
        columns: Columns,
        labels: FloatArray,
        weights: FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Monitor | None = None,
        monitor_field: str | None = None,
        monitor_against: str | None = None,
    ) -> dict[str, Any]: ...
    def score_columns(self, columns: Columns) -> npt.NDArray[np.float32]: ...
    def predict_columns(self, columns: Columns) -> npt.NDArray[np.float32]: ...
    @property
    def interaction(self) -> str: ...
    def embedding_of(
        self, field: str, against: str | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...
    def embedding_span(self, field: str, against: str | None = None) -> tuple[int, int]: ...
    def copy(self) -> Self: ...
    def save(self, path: str | PathLike[str]) -> int: ...
    @classmethod
    def load(
        cls,
        path: str | PathLike[str],
        capacity: int | None = None,
        lifecycles: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> Self: ...

class MatrixFactorization(FieldModel):
    def __init__(
        self,
        dim: int = 32,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-8,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = ...,
        item_lifecycle: dict[str, Any] | None = None,
        user_lifecycle: dict[str, Any] | None = None,
    ) -> None: ...
    @property
    def users(self) -> EmbeddingTable: ...
    @property
    def items(self) -> EmbeddingTable: ...
    def train(  # type: ignore[override]
        self,
        users: IdArray,
        items: IdArray,
        labels: FloatArray,
        weights: FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Any = None,
    ) -> dict[str, Any]: ...
    def score(self, users: IdArray, items: IdArray) -> npt.NDArray[np.float32]: ...  # type: ignore[override]
    def predict(self, users: IdArray, items: IdArray) -> npt.NDArray[np.float32]: ...  # type: ignore[override]
    @staticmethod
    def load(
        path: str | PathLike[str],
        capacity: int | None = None,
        item_lifecycle: Mapping[str, Any] | None = None,
        user_lifecycle: Mapping[str, Any] | None = None,
    ) -> MatrixFactorization: ...

class Monitor:
    quantile_relative_error: float
    def __init__(
        self,
        *,
        sample_rate: float = 0.01,
        track_ids: Sequence[int] | npt.NDArray[np.uint64] | None = None,
        track_window: tuple[int, int] | None = None,
        milestones: Sequence[int] | None = None,
        count_limit: int = 64,
        per_doubling: int = 8,
        age_per_doubling: int = 2,
        max_records: int = 1_000_000,
        seed: int = 0,
    ) -> None: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def memory_bytes(self) -> int: ...
    def observe(
        self,
        ids: IdArray,
        rows: npt.NDArray[np.float32] | npt.NDArray[np.float64],
        counts: npt.NDArray[np.int64] | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
    ) -> None: ...
    def record_publish(
        self, table: EmbeddingTable, timestamp: int = 0, columns: tuple[int, int] | None = None
    ) -> int: ...
    def trajectories(self) -> dict[str, npt.NDArray[Any]]: ...
    def path_efficiency(self) -> dict[str, npt.NDArray[Any]]: ...
    def summary(self) -> dict[str, Any]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def merge(self, other: Monitor) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Monitor: ...
    @staticmethod
    def health(
        table: EmbeddingTable,
        max_norm: float | None = None,
        ttl: int | None = None,
        now: int | None = None,
        max_ids: int = 100,
    ) -> dict[str, Any]: ...

class FieldAwareFM(FieldModel):
    def __init__(
        self,
        fields: Sequence[str],
        dim: int = 8,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-8,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = ...,
        lifecycles: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None: ...

class FactorizationMachine(FieldModel):
    def __init__(
        self,
        fields: Sequence[str],
        dim: int = 32,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-8,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = ...,
        lifecycles: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None: ...

def rowwise_cosine(
    a: npt.NDArray[np.floating[Any]], b: npt.NDArray[np.floating[Any]], threads: int = 2
) -> npt.NDArray[np.float64]: ...
def cross_product(
    a: npt.NDArray[np.floating[Any]], b: npt.NDArray[np.floating[Any]], threads: int = 2
) -> npt.NDArray[np.float64]: ...
