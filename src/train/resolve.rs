//! Id resolution: the rows of a call's ids, created for unseen ids, with
//! the capacity of every table checked before the first row is created.
//!
//! A row's initial value depends only on (table seed, id), so creating all
//! new rows of a call up front gives the same result as creating each on
//! first sight; it also lets the training loop prefetch rows ahead.

use crate::error::{unknown_ids, Error, Result};
use crate::kernels::parallel::{chunks, fan_out, workers};
use crate::storage::table::EmbeddingTable;

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
    // Pass 2: create the rows (concurrently; duplicates resolve in the map).
    let created: Vec<Result<Vec<(usize, u32, bool)>>> = fan_out(
        "row creation",
        to_create.iter().collect(),
        |list: &Vec<usize>| {
            let g = table.guard();
            let mut out = Vec::with_capacity(list.len());
            for (k, &e) in list.iter().enumerate() {
                if let Some(&ahead) = list.get(k + INSERT_AHEAD) {
                    g.prefetch(ids[ahead]);
                }
                let (r, new) = table.get_or_insert(&g, ids[e], time_of(e))?;
                out.push((e, r, new));
            }
            Ok(out)
        },
    )?;
    let mut n_new = 0;
    for part in created {
        for (e, r, new) in part? {
            rows[e] = r;
            n_new += usize::from(new);
        }
    }
    Ok((rows, n_new))
}
