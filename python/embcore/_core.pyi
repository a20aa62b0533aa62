"""Typed stub of the Rust extension module ``embcore._core``."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, ClassVar, Protocol, Self, TypeAlias, TypeVar, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__all__ = [
    "__version__",
    "SlotIndex",
    "TopK",
    "build_profile",
    "DEFAULT_CAPACITY",
    "SNAPSHOT_VERSION",
    "MAX_LABEL",
    "MAX_WEIGHT",
    "EmbeddingTable",
    "rowwise_cosine",
    "cross_product",
    "grouped_auc_sorted",
    "grouped_sums",
    "MatrixFactorization",
    "Monitor",
    "StepTracker",
    "FieldModel",
    "FieldAwareFM",
    "FactorizationMachine",
    "EmbcoreError",
    "UnknownIdError",
    "CapacityError",
    "SnapshotError",
    "ConfigError",
    "DatasetError",
    "shard_of",
    "export_rows",
    "working_model",
    "apply_rows",
    "import_rows",
    "model_state",
]

__version__: str
build_profile: str
DEFAULT_CAPACITY: int
SNAPSHOT_VERSION: int
MAX_LABEL: float
MAX_WEIGHT: float

# Private aliases (not attributes of the extension module): ids are 1-D uint64 arrays or
# non-negative int64 arrays; float inputs are float32 (borrowed) or float64 (converted).
_IdArray: TypeAlias = npt.NDArray[np.uint64] | npt.NDArray[np.int64]
_FloatArray: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

# Monitor.observe / record_rows also take any framework's array: an object with
# __dlpack__ (PyTorch, JAX CPU tensors) or the array interface (read through numpy).
class _SupportsDLPack(Protocol):
    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...

class _SupportsArrayInterface(Protocol):
    @property
    def __array_interface__(self) -> dict[str, Any]: ...

_Foreign: TypeAlias = _SupportsDLPack | _SupportsArrayInterface
_IntArray: TypeAlias = npt.NDArray[np.int64] | npt.NDArray[np.uint64] | _Foreign
# The float dtype shared by both inputs of rowwise_cosine / cross_product.
_F = TypeVar("_F", np.float32, np.float64)
# A lifecycle: a dict of EmbeddingTable's lifecycle keywords (ttl, max_rows, max_bytes,
# keep_floor, eviction, min_count); the runtime takes a dict, not any mapping.
_Lifecycle: TypeAlias = dict[str, Any]

class EmbcoreError(ValueError): ...
class ConfigError(EmbcoreError): ...
class DatasetError(EmbcoreError): ...
class CapacityError(EmbcoreError): ...
class SnapshotError(EmbcoreError): ...
class UnknownIdError(EmbcoreError, KeyError): ...

@final
class EmbeddingTable:
    def __new__(
        cls,
        dim: int,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        eps: float = 1e-08,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = 67108864,
        ttl: int | None = None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        keep_floor: int = 0,
        eviction: str = "lru",
        min_count: int = 1,
    ) -> Self: ...
    @property
    def lifecycle(self) -> dict[str, Any] | None: ...
    @property
    def version(self) -> int: ...
    @property
    def unadmitted_events(self) -> int: ...
    def evict(self, now: int, budget: int = 100000) -> dict[str, Any]: ...
    def changed_since(self, version: int) -> dict[str, Any]: ...
    @property
    def dim(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def init_scale(self) -> float: ...
    @property
    def optimizer(self) -> dict[str, Any]: ...
    @property
    def nbytes(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: int, /) -> bool: ...
    def ids(self) -> npt.NDArray[np.uint64]: ...
    def weights(self) -> npt.NDArray[np.float32]: ...
    def view(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...
    def metadata(self) -> dict[str, npt.NDArray[Any]]: ...
    def optimizer_state(self) -> npt.NDArray[np.float32]: ...
    def get(
        self, ids: _IdArray, default: float | _FloatArray | None = None
    ) -> npt.NDArray[np.float32]: ...
    def set(self, ids: _IdArray, rows: _FloatArray, timestamp: int = 0) -> int: ...
    def insert(self, ids: _IdArray, timestamp: int = 0, threads: int = 1) -> int: ...
    def norms(self) -> npt.NDArray[np.float32]: ...
    def copy(self) -> EmbeddingTable: ...
    def sync_from(self, source: EmbeddingTable) -> dict[str, int]: ...
    def save(self, path: str | PathLike[str]) -> int: ...
    @staticmethod
    def load(path: str | PathLike[str], capacity: int | None = None) -> EmbeddingTable: ...

# Id columns of a field model: a dict {field: 1-D id array} (a dict, not any mapping: the
# runtime rejects other mappings; spelled as a union because dict is invariant), or a 2-D
# (events, n_fields) id array in field order.
_Columns: TypeAlias = (
    dict[str, npt.NDArray[np.uint64]]
    | dict[str, npt.NDArray[np.int64]]
    | dict[str, _IdArray]
    | npt.NDArray[np.uint64]
    | npt.NDArray[np.int64]
)

@disjoint_base
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
    def train_columns(
        self,
        columns: _Columns,
        labels: _FloatArray,
        weights: _FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Monitor | None = None,
        monitor_field: str | None = None,
        monitor_against: str | None = None,
        return_scores: bool = False,
    ) -> dict[str, Any]: ...
    def score_columns(self, columns: _Columns) -> npt.NDArray[np.float32]: ...
    def reset_optimizer(self) -> None: ...
    def predict_columns(self, columns: _Columns) -> npt.NDArray[np.float32]: ...
    def train(
        self,
        columns: _Columns,
        labels: _FloatArray,
        weights: _FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Monitor | None = None,
        monitor_field: str | None = None,
        monitor_against: str | None = None,
        return_scores: bool = False,
    ) -> dict[str, Any]: ...
    def score(self, columns: _Columns) -> npt.NDArray[np.float32]: ...
    def predict(self, columns: _Columns) -> npt.NDArray[np.float32]: ...
    @property
    def interaction(self) -> str: ...
    def save(self, path: str | PathLike[str]) -> int: ...
    @classmethod
    def load(
        cls,
        path: str | PathLike[str],
        capacity: int | None = None,
        lifecycles: dict[str, _Lifecycle | None] | None = None,
    ) -> Self: ...
    def copy(self) -> Self: ...
    def sync_from(self, source: FieldModel) -> dict[str, int]: ...
    def embedding_span(self, field: str, against: str | None = None) -> tuple[int, int]: ...
    def embedding_of(
        self, field: str, against: str | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...

@final
class MatrixFactorization(FieldModel):
    def __new__(
        cls,
        dim: int = 32,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-08,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = 67108864,
        item_lifecycle: _Lifecycle | None = None,
        user_lifecycle: _Lifecycle | None = None,
    ) -> Self: ...
    @property
    def users(self) -> EmbeddingTable: ...
    @property
    def items(self) -> EmbeddingTable: ...
    def train(  # type: ignore[override]
        self,
        users: _IdArray,
        items: _IdArray,
        labels: _FloatArray,
        weights: _FloatArray | None = None,
        timestamps: npt.NDArray[np.int64] | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Monitor | None = None,
        return_scores: bool = False,
    ) -> dict[str, Any]: ...
    def score(self, users: _IdArray, items: _IdArray) -> npt.NDArray[np.float32]: ...  # type: ignore[override]
    def predict(self, users: _IdArray, items: _IdArray) -> npt.NDArray[np.float32]: ...  # type: ignore[override]
    @staticmethod
    def load(
        path: str | PathLike[str],
        capacity: int | None = None,
        item_lifecycle: _Lifecycle | None = None,
        user_lifecycle: _Lifecycle | None = None,
    ) -> MatrixFactorization: ...

@final
class Monitor:
    def __new__(
        cls,
        *,
        sample_rate: float = 0.01,
        track_ids: Sequence[int] | npt.NDArray[np.uint64] | None = None,
        track_window: tuple[int, int] | None = None,
        milestones: Sequence[int] | None = None,
        count_limit: int = 64,
        per_doubling: int = 8,
        age_per_doubling: int = 2,
        max_records: int = 1000000,
        max_tracked: int = 200000,
        retire_after: int | None = None,
        seed: int = 0,
    ) -> Self: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def memory_bytes(self) -> int: ...
    quantile_relative_error: ClassVar[float]
    def observe(
        self,
        ids: _IdArray | _Foreign,
        rows: _FloatArray | _Foreign,
        counts: _IntArray | None = None,
        timestamps: _IntArray | None = None,
    ) -> None: ...
    def observe_pairs(
        self,
        ids: _IdArray | _Foreign,
        before: _FloatArray | _Foreign,
        after: _FloatArray | _Foreign,
        counts: _IntArray | _Foreign,
        first_seen: _IntArray | _Foreign | None = None,
        timestamps: _IntArray | _Foreign | None = None,
    ) -> None: ...
    def record_publish(
        self, table: EmbeddingTable, timestamp: int = 0, columns: tuple[int, int] | None = None
    ) -> int: ...
    def record_rows(
        self,
        ids: _IdArray | _Foreign,
        rows: _FloatArray | _Foreign,
        counts: _IntArray,
        first_seen: _IntArray,
        timestamp: int = 0,
        final: bool = True,
    ) -> int: ...
    def trajectories(self) -> dict[str, npt.NDArray[Any]]: ...
    def path_efficiency(self) -> dict[str, npt.NDArray[Any]]: ...
    def summary(self) -> dict[str, Any]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def merge(self, other: Monitor) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Monitor: ...
    def __reduce__(self) -> tuple[Callable[[bytes], Monitor], tuple[bytes]]: ...
    @staticmethod
    def health(
        table: EmbeddingTable,
        max_norm: float | None = None,
        ttl: int | None = None,
        now: int | None = None,
        max_ids: int = 100,
    ) -> dict[str, Any]: ...

@final
class SlotIndex:
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def slots(self, ids: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...

@final
class TopK:
    def __new__(cls, n_queries: int, k: int) -> TopK: ...
    def update(
        self,
        scores: npt.NDArray[np.float64],
        offset: int,
        scale: npt.NDArray[np.float64] | None = None,
    ) -> None: ...
    @property
    def index(self) -> npt.NDArray[np.int64]: ...
    @property
    def scores(self) -> npt.NDArray[np.float64]: ...

@final
class StepTracker:
    def __new__(
        cls,
        rows: int,
        dim: int,
        *,
        ids: _IdArray | None = None,
        in_sample: npt.NDArray[np.bool_] | None = None,
        padding_idx: int | None = None,
    ) -> Self: ...
    def before_step(
        self,
        weight: npt.NDArray[np.float32],
        now: int,
        looked_up: npt.NDArray[np.int64] | None = None,
        gradient: npt.NDArray[np.int64] | None = None,
    ) -> int: ...
    def after_step(self, weight: npt.NDArray[np.float32], monitor: Monitor, now: int) -> int: ...
    def discard(self) -> None: ...
    @property
    def counts(self) -> npt.NDArray[np.int64]: ...
    @property
    def seen(self) -> npt.NDArray[np.bool_]: ...
    @property
    def first_seen(self) -> npt.NDArray[np.int64]: ...
    @property
    def pending(self) -> int | None: ...
    @property
    def observe_seconds(self) -> float: ...

@final
class FieldAwareFM(FieldModel):
    def __new__(
        cls,
        fields: Sequence[str],
        dim: int = 8,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-08,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = 67108864,
        lifecycles: dict[str, _Lifecycle | None] | None = None,
    ) -> Self: ...

@final
class FactorizationMachine(FieldModel):
    def __new__(
        cls,
        fields: Sequence[str],
        dim: int = 32,
        *,
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "logistic",
        bias: bool = True,
        eps: float = 1e-08,
        initial_accumulator: float = 0.1,
        init_scale: float = 0.1,
        seed: int = 0,
        capacity: int = 67108864,
        lifecycles: dict[str, _Lifecycle | None] | None = None,
    ) -> Self: ...

def rowwise_cosine(
    a: npt.NDArray[_F], b: npt.NDArray[_F], threads: int = 2
) -> npt.NDArray[np.float64]: ...
def cross_product(
    a: npt.NDArray[_F], b: npt.NDArray[_F], threads: int = 2
) -> npt.NDArray[np.float64]: ...
def grouped_auc_sorted(
    keys: npt.NDArray[np.uint64] | npt.NDArray[np.int64],
    tie_shift: int,
    fields: list[tuple[int, int, int]],
) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]]: ...
def grouped_sums(
    keys: npt.NDArray[np.uint64] | npt.NDArray[np.int64],
    weights: npt.NDArray[np.float32],
    fields: list[tuple[int, int, int]],
    block: int,
) -> list[npt.NDArray[np.float64]]: ...

# Sharded training (embcore.distributed). A row block is a dict of flat arrays: "ids" (uint64),
# "weights" and "state" (float32, row after row), "meta" (uint64, 8 words a row).
_RowBlock: TypeAlias = dict[str, npt.NDArray[Any]]
_FieldModelT = TypeVar("_FieldModelT", bound=FieldModel)

def shard_of(ids: _IdArray, num_shards: int) -> npt.NDArray[np.uint32]: ...
def export_rows(
    model: FieldModel,
    field: str,
    ids: _IdArray,
    first_seen: npt.NDArray[np.int64] | None = None,
    create: bool = False,
) -> tuple[_RowBlock, int]: ...
def working_model(
    model: _FieldModelT,
    rows: dict[str, _RowBlock],
    global_state: tuple[float, float],
    events_seen: int,
) -> _FieldModelT: ...
def apply_rows(model: FieldModel, field: str, before: _RowBlock, after: _RowBlock) -> int: ...
def import_rows(model: FieldModel, field: str, rows: _RowBlock) -> int: ...
def model_state(model: FieldModel) -> tuple[float, float, int]: ...
