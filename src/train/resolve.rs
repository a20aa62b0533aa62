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
use crate::storage::idmap::Claim;
use crate::storage::table::{bases, EmbeddingTable};

/// Row of an event whose id has no row: not admitted yet (see `lifecycle`).
/// (The id map's `EMPTY`, which `MapGuard::get_batch` writes for them.)
pub const MISSING: u32 = crate::storage::idmap::EMPTY;
/// New ids whose map slot is prefetched ahead of their insert.
const INSERT_AHEAD: usize = 16;

/// Fails, naming the table, when some table cannot hold the new ids of its
/// column. Cheap unless a column is longer than the room left.
pub fn check_room(tables: &[&EmbeddingTable], columns: &[&[u64]], names: &[String]) -> Result<()> {
    for ((t, col), name) in tables.iter().zip(columns).zip(names) {
        t.check_room(col).map_err(|e| match e {
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
        })?;
    }
    Ok(())
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
    let n = ids.len();
    let mut rows = vec![MISSING; n];
    let parts = chunks(n, workers(n, threads));
    // Pass 1: lookups only, each worker writing its own slice of `rows`.
    let mut slices = Vec::with_capacity(parts.len());
    let mut rest: &mut [u32] = &mut rows;
    for p in &parts {
        let (mine, tail) = rest.split_at_mut(p.len());
        rest = tail;
        slices.push((p.clone(), mine));
    }
    // One batched pass per worker (`MapGuard::get_batch`: each id hashed
    // once, its slot prefetched ahead); the misses are listed only when
    // there are some.
    let missing: Vec<Vec<usize>> = fan_out("id lookup", slices, |(p, mine)| {
        let g = table.guard();
        if g.get_batch(&ids[p.clone()], mine) == 0 {
            return Vec::new();
        }
        p.zip(mine.iter())
            .filter(|&(_, &r)| r == MISSING)
            .map(|(e, _)| e)
            .collect()
    })?;
    let n_missing: usize = missing.iter().map(Vec::len).sum();
    if n_missing == 0 {
        return Ok((rows, 0));
    }
    if !create {
        return Err(unknown_ids(missing.iter().flatten().map(|&e| ids[e])));
    }
    if n_missing > table.remaining() {
        let mut distinct: Vec<u64> = missing.iter().flatten().map(|&e| ids[e]).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() > table.remaining() {
            return Err(Error::Capacity {
                what: "the table".into(),
                needed: distinct.len(),
                free: table.remaining(),
                capacity: table.capacity(),
            });
        }
    }
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
                if let Some(&(_, ahead, _)) = c.owned.get(k + INSERT_AHEAD) {
                    g.prefetch_slot(ahead);
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
    for (c, found) in claimed.iter().zip(later) {
        for (&e, r) in c.later.iter().zip(found) {
            rows[e] = r;
            if r == MISSING {
                evicted.push(e);
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
