"""embcore.distributed on a local Ray cluster (ray.init(num_cpus=2), one per session).

Skipped, with the reason, only when Ray is not importable; CI installs the ``ray`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embcore
from embcore import _core, sim
from embcore.analysis import snapshot_drift
from embcore.validation import auc

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "embcore[ray]"')
ed = pytest.importorskip("embcore.distributed")

CHUNK = 2048
OPTIONS: dict[str, Any] = {"dim": 8, "seed": 3, "learning_rate": 0.1}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Any:
    """One local cluster for this module (the only one using Ray), shut down after it so its
    idle processes do not share the CPUs with the timing-sensitive tests of other modules."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def log() -> sim.Events:
    """A simulated platform log served by random scores (tiny scale, 30k impressions)."""
    cfg = sim.SimConfig.for_scale("tiny", horizon_seconds=6 * sim.HOUR_SECONDS)
    world = sim.World(cfg, seed=5)
    parts = []
    for step in world.steps():
        rng = np.random.default_rng(step.index)
        parts.append(world.serve(step, rng.random((len(step.users), len(step.pool)))))
        if sum(len(p) for p in parts) > 30_000:
            break
    return sim.Events.concat(parts)


def sharded(n: int, **kw: Any) -> Any:
    return ed.ShardedModel(n, chunk_size=CHUNK, cpus_per_shard=0.5, **{**OPTIONS, **kw})


def in_process(u: Any, i: Any, y: Any, t: Any, monitor: Any = None) -> Any:
    """The reference: the same calls (one per chunk) on one in-process model, threads=1."""
    m = embcore.MatrixFactorization(**OPTIONS)
    for s in range(0, y.size, CHUNK):
        cut = slice(s, s + CHUNK)
        kw = {} if monitor is None else {"monitor": monitor}
        m.train(u[cut], i[cut], y[cut], timestamps=t[cut], **kw)
    return m


def rows(table: Any) -> dict[str, np.ndarray]:
    """Every row of a table sorted by id: weights and optimizer state as bits, metadata."""
    order = np.argsort(table.ids())
    out = {
        "weights": table.weights()[order].view(np.uint32),
        "state": table.optimizer_state()[order].view(np.uint32),
    }
    out.update({k: np.asarray(v)[order] for k, v in table.metadata().items()})
    return out


def assert_same_rows(a: Any, b: Any) -> None:
    ra, rb = rows(a), rows(b)
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def test_shard_of_is_the_documented_hash_placement() -> None:
    ids = np.arange(50_000, dtype=np.uint64)
    got = ed.shard_of(ids, 3)
    # The documented rule: top bits of murmur3's 64-bit finaliser of the id, times n, >> 64.
    m = 0xFFFFFFFFFFFFFFFF
    for k in range(0, 50_000, 997):
        x = k
        x ^= x >> 33
        x = (x * 0xFF51AFD7ED558CCD) & m
        x ^= x >> 33
        x = (x * 0xC4CEB9FE1A85EC53) & m
        x ^= x >> 33
        assert got[k] == (x * 3) >> 64
    counts = np.bincount(got, minlength=3)
    assert (abs(counts - 50_000 / 3) < 600).all(), counts
    with pytest.raises(embcore.ConfigError, match="num_shards"):
        ed.shard_of(ids, 0)


def test_one_shard_reproduces_the_in_process_model_bit_for_bit(log: sim.Events) -> None:
    u, i, y, t = log.users, log.items, log.click, log.timestamps
    ref_monitor = embcore.Monitor()
    ref = in_process(u, i, y, t, ref_monitor)
    ref_scores = []
    check = embcore.MatrixFactorization(**OPTIONS)
    for s in range(0, y.size, CHUNK):
        cut = slice(s, s + CHUNK)
        ref_scores.append(
            check.train(u[cut], i[cut], y[cut], timestamps=t[cut], return_scores=True)["scores"]
        )
    with sharded(1) as m:
        out = m.train(u, i, y, timestamps=t, return_scores=True)
        np.testing.assert_array_equal(out["scores"], np.concatenate(ref_scores))
        whole = m.gather()
        for field in ("user", "item"):
            assert_same_rows(ref.table(field), whole.table(field))
        assert whole.global_bias == ref.global_bias
        assert m.events_seen == ref.events_seen == y.size
        assert m.monitor().to_bytes() == ref_monitor.to_bytes()
        np.testing.assert_array_equal(m.score(u[:500], i[:500]), ref.score(u[:500], i[:500]))
        np.testing.assert_array_equal(m.predict(u[:500], i[:500]), ref.predict(u[:500], i[:500]))
        items = m.table("item")
        assert len(items) == len(ref.items) and items.lifecycle is None
        assert int(i[0]) in items and 10**15 not in items
        probe = np.concatenate([i[:50], np.array([10**15], np.uint64)])
        np.testing.assert_array_equal(
            items.get(probe, default=0.0), ref.items.get(probe, default=0.0)
        )
        with pytest.raises(embcore.UnknownIdError):
            items.get(np.array([10**15], np.uint64))
        unknown = np.array([10**15, 10**15 + 1], dtype=np.uint64)
        np.testing.assert_array_equal(m.score(unknown, unknown), ref.score(unknown, unknown))


def test_two_shards_match_one_process_in_quality_and_exact_counts(log: sim.Events) -> None:
    """Protocol: chunks of 256 events, at most one event per active user per chunk on
    average (the log has about 400 users), the regime of a production table (a 65k-event chunk
    over 180M users). Staleness grows with events per user per chunk (docs/distributed.md)."""
    u, i, y, t = log.users, log.items, log.click, log.timestamps
    chunk = 256
    assert chunk <= np.unique(u).size
    ref = embcore.MatrixFactorization(**OPTIONS)
    ref_monitor = embcore.Monitor()
    ref_scores = [
        ref.train(
            u[s : s + chunk],
            i[s : s + chunk],
            y[s : s + chunk],
            timestamps=t[s : s + chunk],
            monitor=ref_monitor,
            return_scores=True,
        )["scores"]
        for s in range(0, y.size, chunk)
    ]
    with ed.ShardedModel(2, chunk_size=chunk, cpus_per_shard=0.5, **OPTIONS) as m:
        out = m.train(u, i, y, timestamps=t, return_scores=True)
        assert out["events"] == y.size and sum(out["shard_events"]) == y.size
        assert min(out["shard_events"]) > 0.3 * y.size  # both shards trained
        one, two = auc(np.concatenate(ref_scores), y), auc(out["scores"], y)
        assert one is not None and two is not None
        assert abs(one - two) < 0.005, (one, two)
        whole = m.gather()
        for field in ("user", "item"):
            a, b = rows(ref.table(field)), rows(whole.table(field))
            np.testing.assert_array_equal(a["ids"], b["ids"])
            np.testing.assert_array_equal(a["interactions"], b["interactions"])
            np.testing.assert_array_equal(a["updates"], b["updates"])
            np.testing.assert_array_equal(a["first_seen"], b["first_seen"])
            np.testing.assert_array_equal(a["last_update"], b["last_update"])
        # Every row lives on the shard its id hashes to, and nowhere else.
        for s, size in enumerate(m.shard_sizes()):
            for field in ("user", "item"):
                ids = ref.table(field).ids()
                assert size[field] == int((ed.shard_of(ids, 2) == s).sum())
        merged, single = m.monitor().summary(), ref_monitor.summary()
        assert merged["updates"] == single["updates"] == y.size
        assert merged["items_seen"] == single["items_seen"]
        assert m.events_seen == y.size
        # The item embeddings are all there, each once.
        ids, vectors = m.item_embeddings()
        assert sorted(ids.tolist()) == sorted(ref.items.ids().tolist())
        assert vectors.shape == (ids.size, OPTIONS["dim"])


def drift_figures(r: Any) -> dict[str, Any]:
    return {
        **r.to_dict(),
        "ids": r.ids.tolist(),
        "unaligned": r.unaligned_drift.tolist(),
        "aligned": r.aligned_drift.tolist(),
    }


@pytest.mark.parametrize("num_shards", [1, 2])
def test_sharded_snapshot_drift_equals_the_single_process_figure(
    log: sim.Events, num_shards: int
) -> None:
    """Drift from shard-by-shard snapshots equals the figure of one process holding the same
    tables (with one shard: the in-process model's own tables)."""
    u, i, y, t = log.users, log.items, log.click, log.timestamps
    half = (y.size // (2 * CHUNK)) * CHUNK
    ref = embcore.MatrixFactorization(**OPTIONS)
    with sharded(num_shards) as m:
        snapshots, whole = [], []
        for cut in (slice(0, half), slice(half, None)):
            m.train(u[cut], i[cut], y[cut], timestamps=t[cut])
            for s in range(cut.start, cut.stop or y.size, CHUNK):
                stop = min(s + CHUNK, cut.stop or y.size)
                ref.train(u[s:stop], i[s:stop], y[s:stop], timestamps=t[s:stop])
            snapshots.append(m.snapshot())
            model = ref if num_shards == 1 else m.gather()
            ids, vectors = model.embedding_of("item", "user")
            whole.append((ids.copy(), vectors.copy()))
        got = ed.snapshot_drift(*snapshots, k=5, n_queries=200)
    want = snapshot_drift(*whole, k=5, n_queries=200)
    assert drift_figures(got) == drift_figures(want)
    assert got.n_b > got.n_a > 0


def test_kill_a_shard_then_restore_loses_nothing_before_the_checkpoint(
    log: sim.Events, tmp_path: Path
) -> None:
    u, i, y, t = log.users, log.items, log.click, log.timestamps
    n1 = 4 * CHUNK
    with sharded(2) as plain:
        plain.train(u[:n1], i[:n1], y[:n1], timestamps=t[:n1])
        expected = plain.gather()
        expected_monitor = plain.monitor().to_bytes()
    with sharded(2, checkpoint_dir=tmp_path, checkpoint_every=n1) as m:
        m.train(u[:n1], i[:n1], y[:n1], timestamps=t[:n1])  # checkpoint at n1
        assert (tmp_path / "LATEST").read_text() == f"ckpt-{n1:015d}"
        m.train(
            u[n1 : n1 + CHUNK],
            i[n1 : n1 + CHUNK],
            y[n1 : n1 + CHUNK],
            timestamps=t[n1 : n1 + CHUNK],
        )
        ray.kill(m._workers[1])
        with pytest.raises(ed.ShardFailedError, match="shard 1 of 2") as err:
            m.train(u[n1:], i[n1:], y[n1:], timestamps=t[n1:])
        assert err.value.shard == 1
        with pytest.raises(ed.ShardFailedError, match="restore"):
            m.score(u[:3], i[:3])
        assert m.restore() == n1
        got = m.gather()
        for field in ("user", "item"):
            assert_same_rows(expected.table(field), got.table(field))
        assert got.global_bias == expected.global_bias
        assert m.monitor().to_bytes() == expected_monitor
        # Training resumes from there: the same as a run that never failed.
        m.train(u[n1:], i[n1:], y[n1:], timestamps=t[n1:])
        assert m.events_seen == y.size


def test_an_incomplete_checkpoint_is_never_read(tmp_path: Path) -> None:
    with sharded(2) as m:
        u = np.arange(100, dtype=np.uint64)
        m.train(u, u % 7, (u % 2).astype(np.float32))
        first = m.save(tmp_path)
        # A crash mid-save leaves a hidden temporary directory and LATEST unchanged.
        (tmp_path / ".ckpt-000000000000200.1.1.tmp").mkdir()
        path, manifest = ed.read_checkpoint(tmp_path)
        assert path == first and manifest["events_seen"] == 100
        (first / "shard-1.model").unlink()
        with pytest.raises(embcore.SnapshotError, match="shard-1.model"):
            ed.read_checkpoint(tmp_path)


def test_resharding_two_to_three_keeps_every_row(log: sim.Events, tmp_path: Path) -> None:
    u, i, y, t = log.users[:8000], log.items[:8000], log.click[:8000], log.timestamps[:8000]
    with sharded(2) as m:
        m.train(u, i, y, timestamps=t)
        before = m.gather()
        monitor = m.monitor().to_bytes()
        m.save(tmp_path)
    manifest = json.loads(
        (tmp_path / (tmp_path / "LATEST").read_text() / "manifest.json").read_text()
    )
    assert manifest["num_shards"] == 2 and len(manifest["shards"]) == 2
    with ed.ShardedModel.load(tmp_path, num_shards=3, cpus_per_shard=0.5) as three:
        assert three.num_shards == 3 and three.events_seen == y.size
        after = three.gather()
        for field in ("user", "item"):
            assert_same_rows(before.table(field), after.table(field))
        assert after.global_bias == before.global_bias
        assert (
            three.monitor().summary()["updates"]
            == embcore.Monitor.from_bytes(monitor).summary()["updates"]
        )
        for s, size in enumerate(three.shard_sizes()):
            ids = before.table("item").ids()
            assert size["item"] == int((ed.shard_of(ids, 3) == s).sum())
        np.testing.assert_array_equal(three.score(u[:200], i[:200]), before.score(u[:200], i[:200]))


def test_field_models_train_sharded(log: sim.Events) -> None:
    cols = log.columns(("user", "item", "tag"))
    y = log.click[:6000]
    cols = {f: c[:6000] for f, c in cols.items()}
    ref = embcore.FieldAwareFM(["user", "item", "tag"], **OPTIONS)
    ref.train(cols, y, timestamps=log.timestamps[:6000])
    with ed.ShardedModel(
        1, "ffm", fields=["user", "item", "tag"], chunk_size=6000, cpus_per_shard=0.5, **OPTIONS
    ) as m:
        m.train(cols, y, timestamps=log.timestamps[:6000])
        whole = m.gather()
        for field in ("user", "item", "tag"):
            assert_same_rows(ref.table(field), whole.table(field))
        np.testing.assert_array_equal(m.score_columns(cols), ref.score_columns(cols))


def test_bad_arguments_are_refused_before_any_actor_starts() -> None:
    with pytest.raises(embcore.ConfigError, match="num_shards"):
        ed.ShardedModel(0)
    with pytest.raises(embcore.ConfigError, match="model must be one of"):
        ed.ShardedModel(2, "svd")
    with pytest.raises(embcore.ConfigError, match="needs fields="):
        ed.ShardedModel(2, "ffm")
    with pytest.raises(embcore.ConfigError, match="not supported"):
        ed.ShardedModel(2, item_lifecycle={"ttl": 10})
    with pytest.raises(embcore.ConfigError, match="checkpoint_dir"):
        ed.ShardedModel(2, checkpoint_every=10)
    with pytest.raises(embcore.ConfigError, match="learning_rate"):
        ed.ShardedModel(2, learning_rate=-1.0)
    with pytest.raises(embcore.ConfigError, match="need 6 CPUs but the Ray cluster has 2"):
        ed.ShardedModel(3, cpus_per_shard=2.0)
    with sharded(1) as m:
        with pytest.raises(embcore.ConfigError, match="must be an embcore.Monitor"):
            m.train_columns({"user": [1], "item": [2]}, [1.0], monitor=object())
        with pytest.raises(embcore.EmbcoreError, match="outside"):
            m.train(np.array([1], np.uint64), np.array([2], np.uint64), np.array([2.0], np.float32))
        assert m.events_seen == 0


def test_worker_merge_rule_matches_the_core() -> None:
    """The global bias merge (Python, shard 0) follows apply_rows' rule (Rust)."""
    from embcore.distributed.worker import merge_scalar

    assert merge_scalar(1.0, 1.0, 1.5) == 1.5  # nobody else changed it: the trainer's value
    assert merge_scalar(2.0, 1.0, 1.5) == 2.5  # changed meanwhile: the delta is added
    assert merge_scalar(2.0, 1.0, 1.0) == 2.0  # the trainer changed nothing
    # Exact where cur + (after - before) would round: 0.1 + (1e-9 - 0.1) is 0 in float32.
    tiny = float(np.float32(1e-9))
    assert merge_scalar(0.1, 0.1, tiny) == tiny
    m = embcore.MatrixFactorization(dim=4)
    before, _ = _core.export_rows(m, "user", np.array([1], np.uint64), create=True)
    after = {k: v.copy() for k, v in before.items()}
    after["weights"] += np.float32(0.5)
    _core.apply_rows(m, "user", before, after)
    _core.apply_rows(m, "user", before, after)
    np.testing.assert_allclose(m.users.weights()[0], before["weights"] + 1.0, rtol=1e-6)


@pytest.mark.parametrize("mode", ["realtime", "hybrid", "batch"])
def test_trainer_modes_run_a_sharded_model(log: sim.Events, mode: str) -> None:
    """Every Trainer mode runs a one-shard model exactly as the in-process one: the same
    pre-event scores and serving scores, and the same monitor (hybrid publishes the sharded
    item table gathered into one process)."""
    from embcore import modes

    n = 6000
    u, i, y, t = log.users[:n], log.items[:n], log.click[:n], log.timestamps[:n]
    monitors = (embcore.Monitor(), embcore.Monitor())
    ref = modes.Trainer(
        mode, model=embcore.MatrixFactorization(**OPTIONS), period="1h", monitor=monitors[0]
    )
    with sharded(1) as m:
        got = modes.Trainer(mode, model=m, period="1h", monitor=monitors[1])
        for s in range(0, n, 1500):
            cut = slice(s, s + 1500)
            a = ref.consume(u[cut], i[cut], y[cut], t[cut], return_scores=True)
            b = got.consume(u[cut], i[cut], y[cut], t[cut], return_scores=True)
            np.testing.assert_array_equal(a, b)
        ref.flush()
        got.flush()
        assert got.publishes == ref.publishes and got.events_consumed == n
        pool = np.unique(i)[:40]
        np.testing.assert_array_equal(
            got.serving_scores(u[:5], pool), ref.serving_scores(u[:5], pool)
        )
    if monitors[0] is not None:
        a, b = monitors[0].summary(), monitors[1].summary()
        assert a["updates"] == b["updates"] and a["items_seen"] == b["items_seen"]
        assert a["records"] == b["records"] > 0
        # Per-chunk monitors merged: exact counts and extremes, equal means; quantiles
        # within the sketch's guarantee (a merged sketch is not the same bits).
        np.testing.assert_array_equal(a["by_count"]["n"], b["by_count"]["n"])
        for stat, sa in a["overall"].items():
            if isinstance(sa, dict) and sa.get("n"):
                sb = b["overall"][stat]
                assert (sa["n"], sa["min"], sa["max"]) == (sb["n"], sb["min"], sb["max"])
                assert sa["mean"] == pytest.approx(sb["mean"], rel=1e-9)


def test_replay_with_one_shard_scores_as_in_process(tmp_path: Path) -> None:
    """``embcore replay --ray 1``: every mode's model is a one-shard ShardedModel, and the
    progressive validation equals the in-process replay's (one shard is bit for bit)."""
    from embcore import cli
    from embcore.datasets import synthetic_log

    path = synthetic_log(tmp_path / "ratings.csv", "movielens", 3000, seed=1)
    common = [
        "replay",
        str(path),
        "--period",
        "1h",
        "--no-progress",
        "--no-figures",
        "--modes",
        "realtime,batch",
    ]
    assert cli.main([*common, "--out", str(tmp_path / "local")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "ray"), "--ray", "1"]) == 0
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    remote = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    assert remote["config"]["ray_shards"] == 1 and local["config"]["ray_shards"] is None
    for mode in ("realtime", "batch"):
        a, b = local["modes"][mode]["engagement"], remote["modes"][mode]["engagement"]
        assert a["auc"] == b["auc"] and a["logloss"] == b["logloss"]


def test_study_runs_with_ray_shards(tmp_path: Path) -> None:
    """``embcore study --ray 1`` on the tiny world: every mode sharded, the study completes
    and records the shards; one shard trains as in process, so the engagement is the same as
    the in-process study without item lifecycles."""
    from embcore.study import run_study

    kw: dict[str, Any] = {"scale": "tiny", "period": "1h", "window": "2h", "progress": False}
    remote = run_study(tmp_path / "ray", ray=1, figures=False, n_boot=20, **kw)
    assert remote["config"]["ray_shards"] == 1
    for mode in ("realtime", "batch"):
        assert remote["modes"][mode]["events"] > 0
