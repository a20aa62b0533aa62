"""Training modes with field models (FFM / FM): serving scores, monitoring of the chosen item
vector, publishes, copies, lifecycles, and the study with ``model="ffm"``."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore
from embcore import modes, runs
from embcore.modes import Trainer
from embcore.sim import FIELDS, SimConfig, World, hour_of_day, tag_ids
from embcore.study import StudyConfigError, run_study

U64 = np.uint64


def field_events(n: int, seed: int = 0, t1: int = 10_000):
    """Events over the simulator's five fields; the label depends on user x tag."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n).astype(U64)
    items = rng.integers(0, 30, n).astype(U64)
    context = {
        "creator": (items % 7).astype(U64),
        "tag": (items % 5).astype(U64),
        "hour": rng.integers(0, 24, n).astype(U64),
    }
    labels = ((users + context["tag"]) % 3 == 0).astype(np.float32)
    times = np.sort(rng.integers(0, t1, n)).astype(np.int64)
    return users, items, labels, times, context


def model_of(kind: str, fields=FIELDS, dim: int = 4, **kw):
    cls = embcore.FieldAwareFM if kind == "ffm" else embcore.FactorizationMachine
    return cls(list(fields), dim=dim, seed=3, **kw)


@pytest.mark.parametrize("module", [modes, runs])
def test_module_doctests(module):
    failures, _ = doctest.testmod(module)
    assert failures == 0


# -- serving ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["ffm", "fm"]),
    n_fields=st.integers(2, 5),
    split=st.data(),
    n_req=st.integers(1, 5),
    n_pool=st.integers(1, 6),
    dim=st.integers(1, 6),
)
def test_serving_scores_rank_like_the_full_score(kind, n_fields, split, n_req, n_pool, dim):
    """serving_scores[r, p] = full score of (request r, candidate p) minus the request-only
    terms: the same ranking, and the difference is exactly the request's own score."""
    fields = [f"f{k}" for k in range(n_fields)]
    # The user field is fields[0], the item field fields[1]; the others go to either side.
    sides = [split.draw(st.booleans(), label=f"{f} on request side") for f in fields[2:]]
    model = model_of(kind, fields, dim=dim)
    rng = np.random.default_rng(n_fields * 100 + dim)
    train = {f: rng.integers(0, 6, 300).astype(U64) for f in fields}
    model.train(train, (rng.random(300) < 0.4).astype(np.float32))
    trainer = Trainer(
        "realtime",
        model,
        user_field=fields[0],
        item_field=fields[1],
        **({} if kind == "ffm" else {"embedding_against": None}),
    )
    # Ids 0-7: some unknown (6, 7) to exercise the zero default.
    on_request = dict(zip(fields[2:], sides, strict=True))
    request = {f: rng.integers(0, 8, n_req).astype(U64) for f, s in on_request.items() if s}
    candidate = {f: rng.integers(0, 8, n_pool).astype(U64) for f, s in on_request.items() if not s}
    users = rng.integers(0, 8, n_req).astype(U64)
    pool = rng.integers(0, 8, n_pool).astype(U64)
    got = trainer.serving_scores(
        users, pool, request_fields=request, candidate_fields=candidate
    ).astype(np.float64)
    assert got.shape == (n_req, n_pool)
    full_request = {fields[0]: users, **request}
    full_candidate = {fields[1]: pool, **candidate}
    never = np.full(n_pool, 2**64 - 1, dtype=U64)
    for r in range(n_req):
        columns = {f: np.repeat(c[r], n_pool).astype(U64) for f, c in full_request.items()}
        columns |= full_candidate
        full = model.score({f: columns[f] for f in fields}).astype(np.float64)
        # The request's own terms: its fields with unknown candidates.
        own_cols = {f: np.repeat(c[r], n_pool).astype(U64) for f, c in full_request.items()}
        own_cols |= {f: never for f in full_candidate}
        own = model.score({f: own_cols[f] for f in fields}).astype(np.float64)
        np.testing.assert_allclose(got[r] + own - model.global_bias, full, rtol=1e-4, atol=1e-4)


def test_serving_rejects_fields_on_no_side_or_both():
    trainer = Trainer("realtime", model_of("ffm"))
    u, p = np.array([1], U64), np.array([2, 3], U64)
    with pytest.raises(ValueError, match=r"\['creator', 'tag', 'hour'\] missing"):
        trainer.serving_scores(u, p)
    both = {"creator": np.array([1], U64), "tag": np.array([1], U64), "hour": np.array([1], U64)}
    with pytest.raises(ValueError, match="both the request and the candidate side"):
        trainer.serving_scores(u, p, request_fields=both, candidate_fields={"tag": p})
    # Fields the model does not have are ignored, as consume(context=) ignores them.
    request = {"hour": np.array([1], U64)}
    candidate = {"creator": np.array([1, 1], U64), "tag": np.array([2, 2], U64)}
    np.testing.assert_array_equal(
        trainer.serving_scores(
            u, p, request_fields={**request, "device": u}, candidate_fields=candidate
        ),
        trainer.serving_scores(u, p, request_fields=request, candidate_fields=candidate),
    )
    with pytest.raises(ValueError, match="one id per request"):
        trainer.serving_scores(
            u,
            p,
            request_fields={"hour": np.array([1, 2], U64)},
            candidate_fields={"creator": p, "tag": p},
        )


# -- training and monitoring ------------------------------------------------------------------


def test_missing_context_field_changes_nothing():
    model = model_of("ffm")
    trainer = Trainer("realtime", model)
    u, i, y, t, ctx = field_events(50)
    del ctx["tag"]
    with pytest.raises(ValueError, match="context has no 'tag' column"):
        trainer.consume(u, i, y, t, context=ctx)
    assert all(len(model.table(f)) == 0 for f in FIELDS)
    assert trainer.events_consumed == 0
    # MF ignores context; a field model ignores columns it has no field for.
    Trainer("realtime", dim=2).consume(u, i, y, t, context={"anything": u})
    Trainer("realtime", model_of("ffm")).consume(
        u, i, y, t, context={**field_events(50)[4], "device": u}
    )


def test_trainer_rejects_bad_field_roles():
    with pytest.raises(ValueError, match="user_field='viewer' is not a field"):
        Trainer("realtime", model_of("ffm"), user_field="viewer")
    with pytest.raises(ValueError, match="must be different"):
        Trainer("realtime", model_of("ffm"), user_field="item")
    with pytest.raises(ValueError, match="one vector per feature"):
        Trainer("realtime", model_of("fm"), embedding_against="user")
    # MF is the two-field FFM: its item row is the block against the user field.
    assert Trainer("realtime", dim=2, embedding_against="user").item_span == (0, 2)
    with pytest.raises(ValueError, match="no block against itself"):
        Trainer("realtime", dim=2, embedding_against="item")

    class Recorder:
        def record_publish(self, table, t):
            pass

    with pytest.raises(ValueError, match="only an embcore.Monitor"):
        Trainer("batch", model_of("ffm"), monitor=Recorder())
    # Whole rows can go to any recorder.
    Trainer("batch", model_of("ffm"), monitor=Recorder(), embedding_against=None)


@pytest.mark.parametrize("against", ["user", "tag", None])
def test_realtime_monitor_records_the_chosen_item_vector(against):
    model = model_of("ffm")
    monitor = embcore.Monitor(sample_rate=1.0)
    trainer = Trainer("realtime", model, monitor=monitor, embedding_against=against)
    u, i, y, t, ctx = field_events(250)
    trainer.consume(u, i, y, t, context=ctx)
    traj = monitor.trajectories()
    width = model.dim if against is not None else model.row_dim
    assert traj["rows"].shape[1] == width
    ids, vectors = trainer.item_embeddings()
    assert vectors.shape[1] == width
    np.testing.assert_array_equal(vectors, model.embedding_of("item", against)[1])
    # Every count up to 10 is a milestone: for items with at most 10 updates the last record
    # is the vector in the table now.
    last = {int(k): row for k, row in zip(traj["ids"], traj["rows"], strict=True)}
    meta = model.table("item").metadata()
    counts = dict(zip(meta["ids"].tolist(), meta["interactions"].tolist(), strict=True))
    checked = 0
    for k, vec in zip(ids.tolist(), vectors, strict=True):
        if counts[k] <= 10:
            np.testing.assert_array_equal(last[k], vec)
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("mode", ["batch", "hybrid"])
def test_publishes_record_the_item_block_of_the_serving_model(mode):
    model = model_of("ffm")
    monitor = embcore.Monitor(sample_rate=1.0)
    trainer = Trainer(mode, model, period=1000, monitor=monitor)
    u, i, y, t, ctx = field_events(600, t1=3500)
    trainer.consume(u, i, y, t, context=ctx)
    trainer.flush(4000)
    assert trainer.publishes == 4
    traj = monitor.trajectories()
    assert traj["rows"].shape[1] == model.dim
    at_end = traj["timestamps"] == 4000
    ids, vectors = trainer.item_embeddings()
    published = dict(zip(traj["ids"][at_end].tolist(), traj["rows"][at_end], strict=True))
    assert set(published) == set(ids.tolist())
    for k, vec in zip(ids.tolist(), vectors, strict=True):
        np.testing.assert_array_equal(published[k], vec)


def test_batch_serves_a_frozen_copy_of_the_field_model():
    model = model_of("ffm")
    trainer = Trainer("batch", model, period=1000)
    u, i, y, t, ctx = field_events(300, t1=900)
    trainer.consume(u, i, y, t, context=ctx)
    assert len(trainer.serving_model.table("item")) == 0
    trainer.advance(1000)
    snapshot = trainer.serving_model
    assert type(snapshot) is embcore.FieldAwareFM and snapshot is not model
    columns = {"user": u, "item": i, **ctx}
    before = snapshot.score(columns)
    np.testing.assert_array_equal(before, model.score(columns))
    u2, i2, y2, t2, ctx2 = field_events(300, seed=1, t1=900)
    trainer.consume(u2, i2, y2, t2 + 1000, context=ctx2)
    trainer.advance(1500)  # no boundary crossed: nothing published, live model untrained
    np.testing.assert_array_equal(snapshot.score(columns), before)
    trainer.advance(2000)  # the next publish syncs the snapshot in place
    assert trainer.serving_model is snapshot
    assert not np.array_equal(snapshot.score(columns), before)
    np.testing.assert_array_equal(snapshot.score(columns), model.score(columns))


def test_field_model_copy_is_deep_and_keeps_the_class():
    for kind, cls in (("ffm", embcore.FieldAwareFM), ("fm", embcore.FactorizationMachine)):
        model = model_of(kind)
        u, i, y, t, ctx = field_events(200)
        columns = {"user": u, "item": i, **ctx}
        model.train(columns, y, timestamps=t)
        twin = model.copy()
        assert type(twin) is cls
        assert twin.fields == model.fields and twin.events_seen == model.events_seen
        np.testing.assert_array_equal(twin.score(columns), model.score(columns))
        assert twin.global_bias == model.global_bias
        for f in FIELDS:
            a, b = model.table(f).metadata(), twin.table(f).metadata()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
        twin.train(columns, y)
        assert not np.array_equal(twin.score(columns), model.score(columns))
        # Same training on both from here gives the same result (optimizer state copied).
        again = model.copy()
        again.train(columns, y)
        model.train(columns, y)
        np.testing.assert_array_equal(again.score(columns), model.score(columns))


def test_embedding_span_matches_embedding_of():
    model = model_of("ffm", dim=3)
    model.train(
        {
            "user": np.array([1], U64),
            "item": np.array([2], U64),
            "creator": np.array([3], U64),
            "tag": np.array([4], U64),
            "hour": np.array([5], U64),
        },
        np.array([1.0], np.float32),
    )
    row = model.table("item").get(np.array([2], U64))[0]
    for against in ["user", "creator", "tag", "hour", None]:
        start, stop = model.embedding_span("item", against)
        np.testing.assert_array_equal(row[start:stop], model.embedding_of("item", against)[1][0])
    assert model.embedding_span("item", "user") == (0, 3)
    assert model.embedding_span("item", "creator") == (3, 6)
    with pytest.raises(ValueError, match="no block against itself"):
        model.embedding_span("item", "item")


def test_record_publish_columns_are_checked():
    model = model_of("ffm", dim=2)
    u, i, y, t, ctx = field_events(50)
    model.train({"user": u, "item": i, **ctx}, y)
    monitor = embcore.Monitor(sample_rate=1.0)
    table = model.table("item")
    for bad in [(0, 0), (3, 2), (0, table.dim + 1), (table.dim, table.dim + 2)]:
        with pytest.raises(ValueError, match="columns"):
            monitor.record_publish(table, 5, columns=bad)
    assert len(monitor.trajectories()["ids"]) == 0
    assert monitor.record_publish(table, 5, columns=(2, 4)) == len(table)
    assert monitor.trajectories()["rows"].shape == (len(table), 2)


# -- lifecycles -------------------------------------------------------------------------------


def test_field_model_lifecycles_evict_and_hand_blocks_to_the_monitor():
    model = model_of("ffm", lifecycles={"item": {"ttl": 500}})
    assert model.table("item").lifecycle["ttl"] == 500
    assert model.table("user").lifecycle is None
    monitor = embcore.Monitor(sample_rate=1.0)
    trainer = Trainer("realtime", model, monitor=monitor)
    u, i, y, t, ctx = field_events(300, t1=1000)
    trainer.consume(u, i, y, t, context=ctx)
    # Items 0-29 stop arriving; users go on with new items 100+ long after the TTL.
    u2, i2, y2, t2, ctx2 = field_events(300, seed=5, t1=1000)
    trainer.consume(u2, i2 + U64(100), y2, t2 + 5000, context=ctx2)
    assert trainer.evicted > 0
    assert not np.isin(np.arange(30, dtype=U64), trainer.item_table().ids()).any()
    traj = monitor.trajectories()
    assert traj["rows"].shape[1] == model.dim
    # The embeddings of a table with evicted rows: the live items, each with its own block.
    for against in ["user", None]:
        ids, vectors = model.embedding_of("item", against)
        live = trainer.item_table().ids()
        assert sorted(ids.tolist()) == sorted(live.tolist())
        start, stop = model.embedding_span("item", against)
        np.testing.assert_array_equal(vectors, model.table("item").get(ids)[:, start:stop])
    ids, vectors = trainer.item_embeddings()
    assert vectors.shape == (len(trainer.item_table()), model.dim)


def test_field_model_lifecycle_admission_skips_unadmitted_events():
    model = model_of("ffm", lifecycles={"tag": {"min_count": 2}})
    columns = {f: np.array([1, 1], U64) for f in FIELDS}
    columns["tag"] = np.array([7, 8], U64)
    model.train(columns, np.array([1.0, 0.0], np.float32))
    # Neither tag reached min_count: no tag row, no update anywhere.
    assert len(model.table("tag")) == 0
    assert model.table("tag").unadmitted_events == 2
    assert model.table("item").metadata()["updates"].sum() == 0


@pytest.mark.parametrize(
    ("lifecycles", "error", "message"),
    [
        ({"device": {"ttl": 5}}, ValueError, "unknown field 'device'"),
        ({"item": 5}, TypeError, "must be a dict"),
        ({"item": {"ttl": 5, "color": 1}}, ValueError, "unknown key"),
        ({"item": {"ttl": -5}}, ValueError, "ttl"),
    ],
)
def test_bad_lifecycles_are_rejected(lifecycles, error, message):
    with pytest.raises(error, match=message):
        model_of("ffm", lifecycles=lifecycles)


# -- simulator fields and the study -----------------------------------------------------------


def test_simulator_emits_the_fields():
    world = World(SimConfig.for_scale("tiny"), seed=1)
    step = world.step(5)
    candidate = world.candidate_fields(step)
    request = world.request_fields(step)
    info = world.item_info(step.pool)
    np.testing.assert_array_equal(candidate["creator"], info.creator)
    np.testing.assert_array_equal(candidate["tag"], tag_ids(info.tag))
    np.testing.assert_array_equal(request["hour"], (step.request_times // 3600) % 24)
    events = world.serve(step, world.oracle_scores(step))
    cols = events.columns()
    assert list(cols) == list(FIELDS)
    info = world.item_info(events.items)
    np.testing.assert_array_equal(cols["creator"], info.creator)
    np.testing.assert_array_equal(cols["tag"], tag_ids(info.tag))
    np.testing.assert_array_equal(cols["hour"], hour_of_day(events.timestamps))
    assert all(c.dtype == U64 and c.size == len(events) for c in cols.values())
    with pytest.raises(ValueError, match="no field"):
        events.columns(["device"])


@pytest.mark.parametrize("model", ["ffm", "fm"])
def test_tiny_study_with_a_field_model(model):
    # period="6h" (a flagged design at this scale, whose own period is 1h): the batch model
    # publishes nothing inside the 6 h horizon, the contrast this test was written for.
    metrics = run_study(None, scale="tiny", model=model, dim=8, progress=False, period="6h")
    cfg = metrics["config"]
    assert cfg["model"] == model and cfg["fields"] == list(FIELDS)
    assert ("against the 'user' field" in cfg["item_embedding"]) == (model == "ffm")
    for mode in ("realtime", "batch"):
        m = metrics["modes"][mode]
        assert m["events"] > 10_000 and m["items"] > 0 and m["tracked_items"] > 0
        assert m["trajectory_records"] > m["tracked_items"]
    # The tiny horizon has too few publishes for batch maturity; real-time has plenty.
    assert metrics["modes"]["realtime"]["maturity"]["n_items"] > 0
    # Real-time serving learns fresh items within the horizon: it beats batch on fresh CTR.
    rt, batch = metrics["modes"]["realtime"], metrics["modes"]["batch"]
    assert rt["engagement"]["fresh_ctr"] > batch["engagement"]["fresh_ctr"]


def test_study_rejects_unknown_models():
    with pytest.raises(StudyConfigError, match="--model must be one of mf, ffm, fm"):
        run_study(None, scale="tiny", model="lr", progress=False)
