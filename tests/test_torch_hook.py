"""embcore.integrations.torch.watch observes exactly the rows each optimizer step changed, with
the values after the step, under the team's ids — the same as a hand-written observe loop."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import embcore

torch = pytest.importorskip("torch")
from embcore.integrations.torch import bench_torch, watch  # noqa: E402

torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told


class Recorder:
    """A stand-in monitor that keeps every observe call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def observe(self, ids, rows, counts=None, timestamps=None) -> None:
        self.calls.append(
            {
                "ids": np.asarray(ids).copy(),
                "rows": np.from_dlpack(rows).copy() if hasattr(rows, "__dlpack__") else rows,
                "counts": np.asarray(counts).copy(),
                "timestamps": np.asarray(timestamps).copy(),
            }
        )


def batches(n_rows: int, steps: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy((rng.zipf(1.5, size) - 1) % n_rows) for _ in range(steps)]


def step(emb, opt, index) -> None:
    opt.zero_grad()
    (emb(index) ** 2).sum().backward()
    opt.step()


def at(call: dict[str, np.ndarray], timestamp: int) -> dict[str, np.ndarray]:
    """The entries of one observe call with this timestamp."""
    keep = call["timestamps"] == timestamp
    return {k: v[keep] for k, v in call.items()}


def test_observes_exactly_the_rows_each_step_changed() -> None:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.01)  # small: no row is driven to exactly 0
    team_ids = np.arange(50, dtype=np.uint64) * 7 + 1000
    rec = Recorder()
    watch(emb, rec, ids=team_ids, optimizer=opt)
    index_batches = batches(50, 20, 16)
    for k, index in enumerate(index_batches):
        before = emb.weight.detach().clone().numpy()
        n = len(rec.calls)
        step(emb, opt, index)
        after = emb.weight.detach().numpy()
        changed = np.flatnonzero((before != after).any(axis=1))
        assert len(rec.calls) == n + 1  # one observe call per step
        call = rec.calls[-1]
        assert np.isin(call["timestamps"], [k, k + 1]).all()
        # After the step (timestamp k + 1): every changed row as it is now.
        post = at(call, k + 1)
        np.testing.assert_array_equal(np.sort(post["ids"]), team_ids[changed])
        np.testing.assert_array_equal(post["rows"], after[(post["ids"] - 1000) // 7])
        # Before it (timestamp k), first: the rows never seen before, as they were.
        pre = at(call, k)
        earlier = torch.cat(index_batches[:k]).numpy() if k else np.zeros(0, np.int64)
        never_seen = np.setdiff1d(changed, earlier)
        np.testing.assert_array_equal(np.sort(pre["ids"]), team_ids[never_seen])
        np.testing.assert_array_equal(pre["rows"], before[(pre["ids"] - 1000) // 7])
        assert (call["timestamps"][: pre["ids"].size] == k).all()  # the references come first
        # counts: lookups so far of each observed row
        seen = torch.cat(index_batches[: k + 1]).numpy()
        rows = (call["ids"] - 1000) // 7
        np.testing.assert_array_equal(call["counts"], np.bincount(seen, minlength=50)[rows])


def reference_steps(emb, opt, index_batches, ids, sample: float = 1.0):
    """Each step's gradient, then ``(k, rows, counts)``: its touched rows (with ``sample < 1``:
    only those whose id hashes below ``sample * 2**64``) and every row's lookups so far; the
    caller observes and steps."""
    from embcore.tables_io import id_hash

    if sample < 1.0:
        kept = id_hash(ids.astype(np.uint64)) < np.uint64(int(sample * 2.0**64))
    counts = np.zeros(emb.weight.shape[0], np.int64)
    for k, index in enumerate(index_batches):
        opt.zero_grad()
        (emb(index) ** 2).sum().backward()
        rows = np.unique(index.numpy())
        if sample < 1.0:
            rows = rows[kept[rows]]
        np.add.at(counts, index.numpy(), 1)
        yield k, rows, counts


def reference_loop(emb, opt, monitor, index_batches, ids, sample: float = 1.0) -> None:
    """The hand-written observe: before each step the rows never seen, after it the touched."""
    seen = np.zeros(emb.weight.shape[0], bool)
    for k, rows, counts in reference_steps(emb, opt, index_batches, ids, sample):
        fresh = rows[~seen[rows]]
        w = emb.weight.detach().numpy()
        if fresh.size:
            monitor.observe(
                ids[fresh],
                w[fresh].copy(),
                counts=counts[fresh],
                timestamps=np.full(fresh.size, k, np.int64),
            )
            seen[fresh] = True
        opt.step()
        w = emb.weight.detach().numpy()
        monitor.observe(
            ids[rows],
            w[rows].copy(),
            counts=counts[rows],
            timestamps=np.full(rows.size, k + 1, np.int64),
        )


def reference_pairs_loop(emb, opt, monitor, index_batches, ids, sample: float = 1.0) -> None:
    """The hand-written observe_pairs: each step's touched rows before and after it, their
    lookups so far and the step of their first sight."""
    first = np.full(emb.weight.shape[0], -1, np.int64)
    for k, rows, counts in reference_steps(emb, opt, index_batches, ids, sample):
        first[rows[first[rows] < 0]] = k
        before = emb.weight.detach().numpy()[rows].copy()
        opt.step()
        monitor.observe_pairs(
            ids[rows],
            before,
            emb.weight.detach().numpy()[rows].copy(),
            counts[rows],
            first_seen=first[rows],
            timestamps=np.full(rows.size, k + 1, np.int64),
        )


@pytest.mark.parametrize(
    ("mode", "sample"), [("auto", 1.0), ("grad", 1.0), ("batch", 1.0), ("auto", 0.5), ("grad", 0.5)]
)
def test_same_monitor_as_the_hand_written_observe(mode: str, sample: float) -> None:
    ids = np.arange(200, dtype=np.uint64)[::-1].copy()
    index_batches = batches(200, 30, 64, seed=2)
    results = []
    for loop in ("hooked", reference_pairs_loop, reference_loop):
        torch.manual_seed(1)
        emb = torch.nn.Embedding(200, 8, sparse=True)
        opt = torch.optim.Adagrad(emb.parameters(), lr=0.1)
        monitor = embcore.Monitor(sample_rate=0.2)
        if loop == "hooked":
            handle = watch(emb, monitor, ids=ids, optimizer=opt, rows=mode, sample=sample)
            for index in index_batches:
                step(emb, opt, index)
            handle.remove()
        else:
            loop(emb, opt, monitor, index_batches, ids, sample)
        results.append(monitor)
    hooked, pairs, observed = results
    assert 0 < hooked.summary()["updates"]
    # The hook hands an embcore.Monitor (before, after) pairs: the same state, byte for byte,
    # as the hand-written pairs loop...
    assert hooked.to_bytes() == pairs.to_bytes()
    # ... and the same statistics and records as the hand-written observe loop, which makes
    # the monitor keep and look up the previous rows itself (it also records, at an item's
    # first milestone, the reference row and its time before the step, where the pairs
    # record the row after that update and its time).
    a, b = hooked.summary(), observed.summary()
    a.pop("memory_bytes"), b.pop("memory_bytes")
    np.testing.assert_equal(a, b)
    ta, tb = hooked.trajectories(), observed.trajectories()
    for key in ("ids", "counts"):
        np.testing.assert_array_equal(ta[key], tb[key])
    later = _after_first_record(ta["ids"], ta["counts"])
    assert later.sum() > 10
    for key in ("rows", "timestamps"):
        np.testing.assert_array_equal(ta[key][later], tb[key][later])


def test_a_step_that_raises_still_sends_its_first_sightings() -> None:
    emb = torch.nn.Embedding(20, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    rec = Recorder()
    handle = watch(emb, rec, optimizer=opt)
    before = emb.weight.detach().clone().numpy()
    (emb(torch.tensor([3, 5, 5])) ** 2).sum().backward()

    def closure() -> None:
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError, match="the step failed"):
        opt.step(closure)  # the pre-hook ran, the post-hook never will
    assert rec.calls == []
    step(emb, opt, torch.tensor([5, 7]))  # the next step sends them first, on their own
    assert rec.calls[0]["ids"].tolist() == [3, 5]
    np.testing.assert_array_equal(rec.calls[0]["rows"], before[[3, 5]])
    assert rec.calls[0]["timestamps"].tolist() == [0, 0]
    assert at(rec.calls[1], 1)["ids"].tolist() == [5, 7] and at(rec.calls[1], 0)[
        "ids"
    ].tolist() == [7]
    (emb(torch.tensor([9])) ** 2).sum().backward()
    with pytest.raises(RuntimeError):
        opt.step(closure)
    handle.remove()  # and so does remove()
    assert rec.calls[-1]["ids"].tolist() == [9] and handle.steps == 1


def test_global_hooks_dense_gradient_padding_and_callable_ids() -> None:
    torch.manual_seed(3)
    emb = torch.nn.Embedding(30, 4, padding_idx=0)  # dense gradient
    other = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    opt_other = torch.optim.SGD(other.parameters(), lr=0.1)
    rec = Recorder()
    with watch(emb, rec, ids=lambda rows: rows + 10, rows="grad") as handle:
        index = torch.tensor([0, 3, 3, 7])
        step(emb, opt, index)
        opt_other.zero_grad()
        other(torch.ones(1, 2)).sum().backward()
        opt_other.step()  # another optimizer: not the watched weight
    assert handle.steps == 1
    after = at(rec.calls[-1], 1)
    assert np.sort(after["ids"]).tolist() == [13, 17]  # padding row 0 excluded
    assert handle.counts[[0, 3, 7]].tolist() == [0, 2, 1]
    step(emb, opt, index)  # removed: nothing more
    assert handle.steps == 1


def test_sample_observes_a_fixed_hashed_share_of_rows() -> None:
    emb = torch.nn.Embedding(1000, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    rec = Recorder()
    watch(emb, rec, optimizer=opt, sample=0.25)
    rng = np.random.default_rng(4)
    for _ in range(10):
        step(emb, opt, torch.from_numpy(rng.integers(0, 1000, 400)))
    observed = np.unique(np.concatenate([c["ids"] for c in rec.calls]))
    assert 0.15 < observed.size / 1000 < 0.35
    from embcore.tables_io import id_hash

    assert (id_hash(observed) < np.uint64(int(0.25 * 2.0**64))).all()


def test_bad_arguments_are_clear_errors() -> None:
    emb = torch.nn.Embedding(10, 4)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(embcore.ConfigError, match="optimizer does not hold"):
        watch(emb, embcore.Monitor(), optimizer=opt)
    with pytest.raises(embcore.ConfigError, match="one id per row of the embedding \\(10\\)"):
        watch(emb, embcore.Monitor(), ids=np.arange(5))
    with pytest.raises(embcore.ConfigError, match="rows must be"):
        watch(emb, embcore.Monitor(), rows="all")
    with pytest.raises(embcore.ConfigError, match="2-D weight"):
        watch(torch.nn.ReLU(), embcore.Monitor())


def test_monitor_observe_takes_tensors_zero_copy() -> None:
    a, b = embcore.Monitor(sample_rate=1.0), embcore.Monitor(sample_rate=1.0)
    w = torch.randn(20, 4)
    for k in range(3):
        a.observe(torch.arange(20), w * (k + 1), counts=torch.full((20,), k + 1))
        b.observe(np.arange(20, dtype=np.uint64), (w * (k + 1)).numpy(), counts=np.full(20, k + 1))
    assert a.to_bytes() == b.to_bytes()
    with pytest.raises(TypeError, match="rows: cannot read a Tensor"):
        a.observe(torch.arange(20), torch.randn(20, 4, requires_grad=True))


def test_example_runs_and_learns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent.parent / "examples" / "torch_two_tower.py"
    argv = sys.argv
    sys.argv = [str(path), "--steps", "200", "--publish-every", "100", "--out", str(tmp_path)]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    first, last = (float(x) for x in out.split("loss ")[1].split()[0:3:2])
    assert last < first
    assert len(list(tmp_path.glob("items-*.parquet"))) == 2


def test_bench_torch_measures_the_hook_and_its_share_of_the_step() -> None:
    from embcore.bench import format_table, ratios

    results: list = []
    out = bench_torch(results, quick=True, repeats=1)
    assert out["step_seconds"] > 0 and out["hook_seconds_per_step"] > 0
    assert out["watched_step_seconds"] > 0
    assert out["hook_share_of_step"] == out["hook_seconds_per_step"] / out["step_seconds"]
    # Both tables' touched rows, a batch of 1024 each: the users' ~1000 and the Zipf items'.
    assert 500 < out["rows_per_step"] <= 2048
    names = [r.name for r in results]
    assert names == ["torch_step", "torch_step_watched", "torch_hook"]
    row = ratios(results)["torch plain step / hook per step (hook < 10 % of step)"]
    assert row["target"] == 10.0
    assert row["value"] == pytest.approx(1.0 / out["hook_share_of_step"])
    assert row["met"] == (out["hook_share_of_step"] <= 0.1)
    doc = {"results": [r.__dict__ for r in results], "ratios": ratios(results)}
    doc["machine"] = {"cpu": "test", "cores": 1, "platform": "test"}
    assert "hook < 10 % of step" in format_table(doc)


def test_docstring_examples() -> None:
    import doctest

    import embcore.integrations.torch as module

    failures, _ = doctest.testmod(module, report=False)
    assert failures == 0


def _after_first_record(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Records other than each item's first (lowest count)."""
    first = {}
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        first[i] = min(c, first.get(i, c))
    return np.array([c > first[i] for i, c in zip(ids.tolist(), counts.tolist(), strict=True)])
