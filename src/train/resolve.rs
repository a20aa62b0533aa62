//! Id resolution: the rows of a call's ids, created for unseen ids, with
//! the capacity of every table checked before the first row is created.
//!
//! A row's initial value depends only on (table seed, id), so creating all
//! new rows of a call up front gives the same result as creating each on
//! first sight; it also lets the training loop prefetch rows ahead.
//!
//! Design note — new ids without shared read-modify-writes (`create_rows`).
//! Creating a row one id at a time took about five locked RMWs on shared
//! cache lines per new id (the map's slot and key counters, the table's
//! row counter and ready counter), so two threads creating rows mostly
//! waited for each other's cache lines. A call now creates its rows in
//! three passes of its workers: (1) each claims the map slots of its new
//! ids in a pending state (one CAS on the id's own slot; lookups see a
//! pending id as absent, a second sight of it in the call is listed for
//! pass 3) and counts them locally; (2) with every count known, the call
//! reserves all its rows at once (`reserve_rows`: evicted rows first, then
//! one reservation of fresh rows) and worker `k` initialises the rows
//! numbered from `c_0 + ... + c_(k-1)` and publishes them in the map;
//! (3) second sights take their id's row. The shared counters change once
//! per worker or call. No row is reserved that is not used, so `len()`,
//! iteration, eviction and saves never meet an unused row, and one worker
//! gets exactly the rows the one-row-at-a-time path gave (bit-identical).
//! Callers hold the table's creation lock, so a call's workers are the only
//! creators while it runs.

use crate::error::{unknown_ids, Error, Result};
use crate::kernels::parallel::{chunks, fan_out, workers};
use crate::storage::idmap::{distinct_len, distinct_lower_bound, Claim};
use crate::storage::table::{bases, EmbeddingTable, Pin};

/// Row of an event whose id has no row: not admitted yet (see `lifecycle`).
/// (The id map's `EMPTY`, which `MapGuard::get_batch` writes for them.)
pub const MISSING: u32 = crate::storage::idmap::EMPTY;
/// New ids whose map slot is prefetched ahead of their insert.
const INSERT_AHEAD: usize = 16;
/// New-id entries from which a call sizes the id map before claiming.
const RESERVE_FROM: usize = 4096;

/// `e` with the table it names called `the {name} table` (a capacity error).
fn named(e: Error, name: &str) -> Error {
    match e {
        Error::Capacity {
            needed,
            free,
            capacity,
            ..
        } => Error::Capacity {
            what: format!("the {name} table"),
            needed,
            free,
            capacity,
        },
        other => other,
    }
}

/// The rows of every table's column for one writing call: each column
/// looked up once (`lookup`), every table's room checked against the ids
/// it lacks, and only then the calls' `pins` (read pins of `tables`, held
/// by the caller for the whole call) made writers and the new rows created
/// (`create`). A rejected call changes nothing, not even a version. The
/// caller holds every table's creation lock. Returns each table's rows and
/// the number of rows created.
pub fn resolve_columns(
    tables: &[&EmbeddingTable],
    columns: &[&[u64]],
    names: &[String],
    pins: &mut [Pin<'_>],
    time_of: &(dyn Fn(usize) -> i64 + Sync),
    threads: usize,
) -> Result<Vec<(Vec<u32>, usize)>> {
    let found: Vec<Lookup> = tables
        .iter()
        .zip(columns)
        .map(|(t, col)| lookup(t, col, threads))
        .collect::<Result<_>>()?;
    for (((t, col), name), f) in tables.iter().zip(columns).zip(names).zip(&found) {
        f.check_room(t, col).map_err(|e| named(e, name))?;
    }
    for p in pins.iter_mut() {
        p.write();
    }
    tables
        .iter()
        .zip(columns)
        .zip(found)
        .map(|((t, col), f)| create(t, col, f, time_of, true))
        .collect()
}

/// Pass 1 of a resolution: the rows of the ids found (`MISSING` for the
/// others) and, per worker share, the entries whose id has no row.
pub struct Lookup {
    rows: Vec<u32>,
    missing: Vec<Vec<usize>>,
}

impl Lookup {
    /// Entries (not distinct ids) without a row.
    pub fn missing(&self) -> usize {
        self.missing.iter().map(Vec::len).sum()
    }

    /// Fails with `Capacity` when the distinct ids without a row do not fit
    /// in `table` (whose column `ids` this looked up). Free while the
    /// missing entries fit.
    pub fn check_room(&self, table: &EmbeddingTable, ids: &[u64]) -> Result<()> {
        let missing_ids = || self.missing.iter().flatten().map(|&e| ids[e]);
        table.check_room_for(self.missing(), || distinct_len(missing_ids()))
    }
}

/// The rows of `ids` in `table`, looked up in one batched pass per worker
/// (`MapGuard::get_batch`: each id hashed once, its slot prefetched ahead);
/// the misses are listed only when there are some. Changes nothing.
pub fn lookup(table: &EmbeddingTable, ids: &[u64], threads: usize) -> Result<Lookup> {
    let n = ids.len();
    // Not filled first: `get_batch_uninit` writes every entry.
    let mut rows: Vec<u32> = Vec::with_capacity(n);
    let parts = chunks(n, workers(n, threads));
    // Each worker writes its own slice of `rows`.
    let mut slices = Vec::with_capacity(parts.len());
    let mut rest = &mut rows.spare_capacity_mut()[..n];
    for p in &parts {
        let (mine, tail) = rest.split_at_mut(p.len());
        rest = tail;
        slices.push((p.clone(), mine));
    }
    let missing: Vec<Vec<usize>> = fan_out("id lookup", slices, |(p, mine)| {
        let g = table.guard();
        let ids = &ids[p.clone()];
        assert_eq!(ids.len(), mine.len());
        if g.get_batch_uninit(ids, mine) == 0 {
            return Vec::new();
        }
        // SAFETY: `get_batch_uninit` wrote every entry of `mine` (as long as
        // `ids`, asserted above); `MaybeUninit<u32>` has `u32`'s layout.
        let mine = unsafe { &*(std::ptr::from_ref(mine) as *const [u32]) };
        p.zip(mine.iter())
            .filter(|&(_, &r)| r == MISSING)
            .map(|(e, _)| e)
            .collect()
    })?;
    // SAFETY: the parts cover 0..n (`chunks`), and every worker wrote each
    // entry of its part (`get_batch_uninit`, lengths asserted); fan_out
    // returned Ok, so every worker finished.
    unsafe { rows.set_len(n) };
    Ok(Lookup { rows, missing })
}

/// Resolve ids to rows for a table, creating unseen ids when `create`
/// (else failing with `UnknownIds`). Returns rows and the number created.
/// Checks the capacity before creating anything. `time_of(k)` is the first
/// sight time of a row created for `ids[k]`.
pub fn resolve(
    table: &EmbeddingTable,
    ids: &[u64],
    time_of: &(dyn Fn(usize) -> i64 + Sync),
    threads: usize,
    create: bool,
) -> Result<(Vec<u32>, usize)> {
    let found = lookup(table, ids, threads)?;
    if create {
        found.check_room(table, ids)?;
    }
    self::create(table, ids, found, time_of, create)
}

/// Pass 2 of a resolution: the rows `found` lacks (of `ids`, as looked up
/// by `lookup` under the caller's pin), created when `create` (else failing
/// with `UnknownIds`); the caller checked the room first
/// (`Lookup::check_room`; the reservation refuses what does not fit all the
/// same, creating nothing). Returns every entry's row and the number of
/// rows created.
pub fn create(
    table: &EmbeddingTable,
    ids: &[u64],
    found: Lookup,
    time_of: &(dyn Fn(usize) -> i64 + Sync),
    create: bool,
) -> Result<(Vec<u32>, usize)> {
    if found.missing() == 0 {
        return Ok((found.rows, 0));
    }
    if !create {
        return Err(unknown_ids(found.missing.iter().flatten().map(|&e| ids[e])));
    }
    let Lookup { mut rows, missing } = found;
    // Admission (lifecycle `min_count`): count the sightings of unseen ids in
    // event order, in one sequential pass, so which sighting admits an id
    // does not depend on thread timing; a row is created at the sighting
    // that reaches min_count, and later sightings in the call use it.
    let to_create: Vec<Vec<usize>> = match table.admission() {
        None => missing,
        Some((filter, min_count)) => {
            let g = table.guard();
            let mut admitted = std::collections::HashSet::new();
            missing
                .iter()
                .map(|list| {
                    list.iter()
                        .copied()
                        .filter(|&e| {
                            let id = ids[e];
                            admitted.contains(&id)
                                || table.lookup(&g, id).is_some()
                                || (filter.add(id) >= min_count && admitted.insert(id))
                        })
                        .collect()
                })
                .collect()
        }
    };
    let n_new = create_rows(table, ids, time_of, &to_create, &mut rows)?;
    Ok((rows, n_new))
}

/// The new rows of `to_create` (per worker: entries of `ids` whose id had
/// no row), created in three passes (see the design note); fills `rows` and
/// returns the number of rows created. The caller holds the table's
/// creation lock and a `begin_write` pin.
fn create_rows(
    table: &EmbeddingTable,
    ids: &[u64],
    time_of: &(dyn Fn(usize) -> i64 + Sync),
    to_create: &[Vec<usize>],
    rows: &mut [u32],
) -> Result<usize> {
    struct Claimed {
        /// (entry, slot, map generation) of each new id this worker owns.
        owned: Vec<(usize, usize, u64)>,
        /// Entries whose id another claim of the call owns.
        later: Vec<usize>,
        /// (entry, row) of ids that had a row after all.
        existing: Vec<(usize, u32)>,
    }
    let claimers = to_create.len();
    let entries: usize = to_create.iter().map(Vec::len).sum();
    if entries >= RESERVE_FROM {
        // Size the map for the new ids up front: growing it while the
        // workers claim stalls them all (and moves their pending slots).
        let keys = to_create.iter().flatten().map(|&e| ids[e]);
        table.reserve_ids(distinct_lower_bound(keys, entries));
    }
    // Pass 1: claim the slots of the new ids (pending: absent to lookups).
    let claimed: Vec<Claimed> = fan_out("row creation", to_create.iter().collect(), |list| {
        let g = table.guard();
        let mut c = g.claimer(claimers);
        let mut out = Claimed {
            owned: Vec::with_capacity(list.len()),
            later: Vec::new(),
            existing: Vec::new(),
        };
        for (k, &e) in list.iter().enumerate() {
            if let Some(&ahead) = list.get(k + INSERT_AHEAD) {
                g.prefetch(ids[ahead]);
            }
            match g.claim_pending(&mut c, ids[e]) {
                Claim::Owned(slot, gen) => out.owned.push((e, slot, gen)),
                Claim::Pending => out.later.push(e),
                Claim::Existing(r) => out.existing.push((e, r)),
            }
        }
        g.finish(c);
        out
    })?;
    let counts: Vec<usize> = claimed.iter().map(|c| c.owned.len()).collect();
    let total: usize = counts.iter().sum();
    // Pass 2: every row at once, then each worker initialises and publishes
    // its own. On failure every claim is abandoned: nothing is created.
    let new_rows = match table.reserve_rows(total) {
        Ok(r) => r,
        Err(e) => {
            fan_out("row creation", claimed.iter().collect(), |c: &Claimed| {
                let g = table.guard();
                for &(e, slot, gen) in &c.owned {
                    g.publish((slot, gen), ids[e], None);
                }
            })?;
            return Err(e);
        }
    };
    let bases = bases(&counts);
    fan_out(
        "row creation",
        claimed.iter().zip(&bases).collect(),
        |(c, &base): (&Claimed, &usize)| {
            let g = table.guard();
            for (k, &(e, slot, gen)) in c.owned.iter().enumerate() {
                if let Some(&(a, slot, gen)) = c.owned.get(k + INSERT_AHEAD) {
                    g.prefetch_claim((slot, gen), ids[a]);
                }
                let r = new_rows.row(base + k);
                table.init_new_row(r, ids[e], time_of(e));
                g.publish((slot, gen), ids[e], Some(r));
            }
        },
    )?;
    table.commit_rows(&new_rows);
    table.count_published(total);
    for (c, &base) in claimed.iter().zip(&bases) {
        for (k, &(e, _, _)) in c.owned.iter().enumerate() {
            rows[e] = new_rows.row(base + k);
        }
    }
    // Pass 3: later sights of new ids (their rows are all published now)
    // and ids that had a row: their row, first seen at the earliest sight.
    let later: Vec<Vec<u32>> = fan_out("row creation", claimed.iter().collect(), |c: &Claimed| {
        let g = table.guard();
        let ids_later: Vec<u64> = c.later.iter().map(|&e| ids[e]).collect();
        let mut found = vec![MISSING; ids_later.len()];
        g.get_batch(&ids_later, &mut found);
        for (&e, &r) in c.later.iter().zip(&found) {
            // MISSING: evicted since pass 2 (the row is pinned: found below).
            if r != MISSING {
                table.keep_first_seen(r, time_of(e));
            }
        }
        for &(e, r) in &c.existing {
            table.keep_first_seen(r, time_of(e));
        }
        found
    })?;
    let mut evicted = Vec::new();
    // A new id first sighted by worker `w` but created by a later worker
    // (which claimed it first) is last updated at its first sighting, as
    // the one-thread creation has it (first_seen is already the earliest).
    let reused: std::collections::HashMap<u32, usize> = if claimers > 1 {
        new_rows
            .reused()
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, k))
            .collect()
    } else {
        Default::default()
    };
    let mut fixed = std::collections::HashSet::new();
    for (w, (c, found)) in claimed.iter().zip(later).enumerate() {
        for (&e, r) in c.later.iter().zip(found) {
            rows[e] = r;
            if r == MISSING {
                evicted.push(e);
                continue;
            }
            if claimers > 1 {
                let k = new_rows.fresh_number(r).or_else(|| reused.get(&r).copied());
                let owner = k.map(|k| bases.partition_point(|&b| b <= k) - 1);
                if owner.is_some_and(|o| o > w) && fixed.insert(r) {
                    table.set_first_update(r, time_of(e));
                }
            }
        }
        for &(e, r) in &c.existing {
            rows[e] = r;
        }
    }
    if !evicted.is_empty() {
        // New rows evicted by a concurrent `evict` before their later sights
        // were looked up: those sights take the row the call created.
        let made: std::collections::HashMap<u64, u32> = claimed
            .iter()
            .flat_map(|c| c.owned.iter())
            .map(|&(e, _, _)| (ids[e], rows[e]))
            .collect();
        for e in evicted {
            rows[e] = made[&ids[e]];
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rng::hash2;
    use crate::storage::lifecycle::Lifecycle;
    use crate::storage::table::{dec_time, meta, TableConfig};
    use std::collections::HashMap;

    fn table(capacity: usize, lifecycle: Option<Lifecycle>) -> EmbeddingTable {
        let cfg = TableConfig {
            capacity,
            seed: 3,
            ..TableConfig::new(4)
        };
        match lifecycle {
            Some(lc) => EmbeddingTable::with_lifecycle(cfg, lc).unwrap(),
            None => EmbeddingTable::new(cfg).unwrap(),
        }
    }

    /// `resolve` as the callers run it: creation lock, capacity check, pin.
    fn insert(
        t: &EmbeddingTable,
        ids: &[u64],
        time: &(dyn Fn(usize) -> i64 + Sync),
        threads: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let _creating = t.creation();
        t.check_room(ids)?;
        let _pin = t.begin_write();
        resolve(t, ids, time, threads, true)
    }

    /// The slow obvious reference: one `get_or_insert` per event, in order.
    fn reference(
        t: &EmbeddingTable,
        ids: &[u64],
        time: &dyn Fn(usize) -> i64,
    ) -> (Vec<u32>, usize) {
        let _pin = t.begin_write();
        let g = t.guard();
        let mut created = 0;
        let rows = ids
            .iter()
            .enumerate()
            .map(|(e, &id)| {
                let (r, new) = t.get_or_insert(&g, id, time(e)).unwrap();
                created += usize::from(new);
                r
            })
            .collect();
        (rows, created)
    }

    type Row = (Vec<u32>, [u64; meta::WORDS]);

    /// Each live id's weights (bits) and metadata, and the ids in row order.
    fn by_id(t: &EmbeddingTable) -> (HashMap<u64, Row>, Vec<u64>) {
        let reader = t.reader();
        let mut out = HashMap::new();
        for (&r, &id) in reader.rows().iter().zip(reader.ids()) {
            let w = t
                .row(r)
                .iter()
                .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            let m: Vec<u64> = t
                .meta(r)
                .iter()
                .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            out.insert(id, (w, m.try_into().unwrap()));
        }
        (out, reader.ids().to_vec())
    }

    /// Calls with repeated ids (within and across the workers' shares),
    /// rows freed by eviction waiting for reuse and unsorted timestamps
    /// give, at every thread count, the ids, initial rows, metadata and
    /// counters of the one-event-at-a-time reference; one worker gives its
    /// very rows, and so does any count when no new id spans two shares.
    #[test]
    fn bulk_creation_equals_one_insert_at_a_time() {
        for case in 0..12u64 {
            let n = [1usize, 100, 5_000, 20_000][case as usize % 4];
            let distinct = [n as u64, n as u64 / 3 + 1][(case / 4 % 2) as usize];
            let spans = case % 3 != 2; // else: each id in one share only
            let ids: Vec<u64> = (0..n as u64)
                .map(|e| {
                    let k = if spans {
                        hash2(case, e) % distinct
                    } else {
                        e * distinct / n as u64
                    };
                    hash2(99, k) | 1
                })
                .collect();
            let time = |e: usize| (hash2(case + 7, e as u64) % 1_000) as i64;
            let evict_first = case % 2 == 1;
            let make = || {
                let lc = Lifecycle {
                    max_rows: Some(50),
                    keep_floor: 0,
                    ..Default::default()
                };
                let t = table(1 << 16, Some(lc));
                // Rows freed by eviction wait in the free list: reused first.
                if evict_first {
                    let warm: Vec<u64> = (0..300u64).map(|k| k * 2).collect();
                    insert(&t, &warm, &|_| 0, 1).unwrap();
                    t.evict(0, 1_000).unwrap();
                    drop(t.pin());
                }
                t
            };
            let want_t = make();
            let (want_rows, want_new) = reference(&want_t, &ids, &time);
            let (want, want_order) = by_id(&want_t);
            for threads in [1usize, 2, 3, 4] {
                let t = make();
                let (rows, created) = insert(&t, &ids, &time, threads).unwrap();
                assert_eq!(created, want_new, "case {case} threads {threads}");
                assert_eq!(t.len(), want_t.len(), "case {case} threads {threads}");
                assert_eq!(t.live_len(), want_t.live_len());
                assert_eq!(t.remaining(), want_t.remaining());
                let (got, order) = by_id(&t);
                assert_eq!(got, want, "case {case} threads {threads}");
                // The rows of the call point at their ids.
                for (e, &r) in rows.iter().enumerate() {
                    assert_eq!(
                        t.meta(r)[meta::ID].load(std::sync::atomic::Ordering::Relaxed),
                        ids[e]
                    );
                }
                if threads == 1 || !spans {
                    assert_eq!(rows, want_rows, "case {case} threads {threads}");
                    assert_eq!(order, want_order);
                }
            }
        }
    }

    /// A call that does not fit creates nothing: no row, no map entry, the
    /// counters unchanged, and the same ids fit once room is made.
    #[test]
    fn a_bulk_creation_that_does_not_fit_creates_nothing() {
        let t = table(10_000, None);
        let ids: Vec<u64> = (0..9_000u64).collect();
        insert(&t, &ids, &|_| 0, 2).unwrap();
        let more: Vec<u64> = (9_000..20_000u64).collect();
        let before = (t.len(), t.live_len(), t.remaining(), t.ids());
        // Past the capacity check (as a caller that checked too little
        // would be): the reservation refuses and abandons every claim.
        {
            let _creating = t.creation();
            let _pin = t.begin_write();
            let found = lookup(&t, &more, 2).unwrap();
            assert!(matches!(
                create(&t, &more, found, &|_| 0, true),
                Err(Error::Capacity { .. })
            ));
        }
        assert_eq!((t.len(), t.live_len(), t.remaining(), t.ids()), before);
        assert!(!t.contains(9_000) && !t.contains(19_999));
        insert(&t, &more[..1_000], &|_| 0, 2).unwrap();
        assert_eq!(t.len(), 10_000);
        assert!(t.contains(9_999));
    }

    /// Several tables in one call: when one lacks room, none creates a row
    /// or bumps its version (the error names the table); when all have
    /// room, each column's rows are the one-table resolution's and every
    /// version moves once. Repeated ids count once against the room.
    #[test]
    fn resolving_columns_checks_every_table_before_changing_any() {
        let (a, b) = (table(100, None), table(10, None));
        insert(&b, &[1, 2, 3, 4, 5, 6, 7, 8], &|_| 0, 1).unwrap();
        let names = ["user".to_string(), "item".to_string()];
        let users: Vec<u64> = (0..40u64).collect();
        let items: Vec<u64> = [9, 10, 11, 9].to_vec();
        let state = |t: &EmbeddingTable| (t.len(), t.version(), t.ids());
        let before = (state(&a), state(&b));
        let run = |items: &[u64]| {
            let _creating = (a.creation(), b.creation());
            let mut pins = [a.pin(), b.pin()];
            resolve_columns(&[&a, &b], &[&users, items], &names, &mut pins, &|_| 0, 2)
        };
        match run(&items) {
            Err(Error::Capacity {
                what, needed, free, ..
            }) => {
                assert_eq!((what.as_str(), needed, free), ("the item table", 3, 2));
            }
            other => panic!("expected a capacity error, got {:?}", other.map(|_| ())),
        }
        assert_eq!((state(&a), state(&b)), before);
        let fits = [9u64, 10, 9, 10];
        let out = run(&fits).unwrap();
        assert_eq!((out[0].1, out[1].1), (40, 2));
        assert_eq!(
            (a.version(), b.version()),
            (before.0 .1 + 1, before.1 .1 + 1)
        );
        for (t, col, (rows, _)) in [(&a, &users[..], &out[0]), (&b, &fits[..], &out[1])] {
            let g = t.guard();
            let expect: Vec<u32> = col.iter().map(|&id| g.get(id).unwrap()).collect();
            assert_eq!(rows, &expect);
        }
    }

    /// Writers creating rows with two workers while readers list the table
    /// and an evictor removes rows: readers never see an unused or
    /// half-made row, every created id is either live or evicted exactly
    /// once, evicted rows are reused (the stream needs far more rows than
    /// the capacity), and every live row equals the one a one-thread
    /// insert of the same batches makes.
    #[test]
    fn inserting_workers_readers_and_eviction_at_once() {
        const BATCH: usize = 12_000;
        const BATCHES: u64 = 40;
        let lc = Lifecycle {
            max_rows: Some(20_000),
            keep_floor: 0,
            ..Default::default()
        };
        let t = table(120_000, Some(lc));
        let reference_t = table(BATCH * BATCHES as usize, None);
        // Batch b: ids of batch b only (each id is new exactly once), with
        // repeats inside the batch, first seen at b.
        let batch = |b: u64| -> Vec<u64> {
            (0..BATCH as u64)
                .map(|e| (b << 32) | (hash2(b, e) % (BATCH as u64 * 2 / 3)) | 1 << 62)
                .collect()
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        /// Ends the other threads' loops however this thread ends (a
        /// failed assertion would otherwise leave them running).
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let evicted: std::sync::Mutex<Vec<u64>> = Default::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _done = Done(&done);
                for b in 0..BATCHES {
                    let ids = batch(b);
                    insert(&t, &ids, &|_| b as i64, 2).unwrap();
                }
            });
            s.spawn(|| {
                let _done = Done(&done);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = t.evict(0, 120_000).unwrap();
                    evicted.lock().unwrap().extend(out.ids);
                    // Leave the eviction lock free at times: pins dropping
                    // reclaim rows only when they get it.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    let _done = Done(&done);
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let reader = t.reader();
                        for (&r, &id) in reader.rows().iter().zip(reader.ids()) {
                            assert_ne!(id & 1 << 62, 0, "row {r}: id {id} was never inserted");
                            let b = (id >> 32) & 0x3fff_ffff;
                            let m = t.meta(r);
                            assert_eq!(
                                dec_time(
                                    m[meta::FIRST_SEEN].load(std::sync::atomic::Ordering::Relaxed)
                                ),
                                b as i64
                            );
                            for (k, w) in t.row(r).iter().enumerate() {
                                assert_eq!(
                                    f32::from_bits(w.load(std::sync::atomic::Ordering::Relaxed)),
                                    t.initial_value(id, k),
                                    "row {r} id {id}"
                                );
                            }
                        }
                        let n = t.len();
                        assert!(n <= t.capacity());
                        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        assert!(reads.into_inner() > 0);
        let mut created = 0;
        for b in 0..BATCHES {
            created += insert(&reference_t, &batch(b), &|_| b as i64, 1).unwrap().1;
        }
        assert!(created > t.capacity(), "the stream must need reused rows");
        let (live, _) = by_id(&t);
        let (want, _) = by_id(&reference_t);
        let mut gone = evicted.into_inner().unwrap();
        assert_eq!(live.len(), t.live_len());
        assert_eq!(
            live.len() + gone.len(),
            created,
            "a row leaked or was evicted twice"
        );
        gone.sort_unstable();
        let n = gone.len();
        gone.dedup();
        assert_eq!(gone.len(), n, "an id evicted twice");
        for (id, (w, m)) in &live {
            let (ww, wm) = &want[id];
            assert_eq!(w, ww, "id {id}");
            for word in std::iter::once(meta::ID).chain(meta::CARRIED) {
                assert_eq!(m[word], wm[word], "id {id} word {word}");
            }
            assert!(gone.binary_search(id).is_err(), "id {id} evicted yet live");
        }
    }
}
