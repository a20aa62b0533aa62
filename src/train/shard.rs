//! Sharded training, parameter-server style: the core entry points behind
//! `embcore.distributed`. A model is split into shards by `shard_of`; the
//! shard that owns an event's item trains it on a *working copy* of the
//! other fields' rows, pulled from their owners, and pushes the changed rows
//! back to them.
//!
//! * `shard_of`: the stable placement of an id (the core's 64-bit id hash).
//! * `export_rows`: the full rows of some ids (weights, optimizer state,
//!   metadata), created first on request: what an owner answers to a pull.
//! * `working_model`: a model over working copies of supplied rows for some
//!   fields and the shard's own tables for the rest; the engine's one driver
//!   and per-event kernel train it unchanged (so a model with one shard
//!   trains bit for bit as in one process).
//! * `apply_rows`: the owner's side of a push: merge a trainer's rows
//!   (before, after) into the owned rows, lock-free.
//! * `import_rows`: write full rows into a table (resharding a checkpoint).
//!
//! Design notes.
//! * Placement uses the top bits of `mix64(id)` (multiply-shift range
//!   reduction), not `mix64(id) % n`: the id map indexes its slots with the
//!   low bits of the same hash, so a modulo placement would leave each
//!   shard's map with a fixed pattern of slots in use.
//! * The push carries rows, not raw loss gradients: the trainer already ran
//!   one optimizer step per event on its working copy, with the owner's
//!   optimizer state pulled along, so what comes back is the delta of the
//!   weights *and* of the state. The owner merges value by value: a value
//!   nobody else changed since the pull takes the trainer's value exactly
//!   (one trainer, one shard: bit for bit the in-process step); a value that
//!   changed meanwhile (another shard trained the same user in the same
//!   chunk) gets the trainer's delta added, the Hogwild sum. Counters add
//!   their deltas exactly (`fetch_add`); first/last seen take min/max
//!   (`fetch_min` / `fetch_max`); values are Relaxed loads and stores of
//!   the `AtomicU32` / `AtomicU64` cells, like the kernel's: no lock.
//! * Staleness: a trainer sees the other fields' rows as they were at the
//!   pull, i.e. at the start of its chunk: updates made by other shards to
//!   the same rows during that chunk reach it at the next chunk. Staleness is
//!   therefore bounded by one chunk, as in Monolith's and Persia's
//!   asynchronous parameter servers.

use crate::error::{invalid, shape, unknown_ids, Result};
use crate::kernels::rng::mix64;
use crate::storage::table::{meta, EmbeddingTable, TableConfig};
use crate::train::model::FieldModel;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The shard of `id` among `num_shards` (>= 1): the top bits of the core's
/// id hash `mix64(id)`, scaled to `[0, num_shards)`. Stable: it depends on
/// the id and the shard count only.
#[inline]
pub fn shard_of(id: u64, num_shards: u32) -> u32 {
    ((u128::from(mix64(id)) * u128::from(num_shards)) >> 64) as u32
}

/// Full rows of one table: ids, weights (`dim` each), optimizer state
/// (`state_width` each) and the metadata record (`meta::WORDS` each).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowBlock {
    pub ids: Vec<u64>,
    pub weights: Vec<f32>,
    pub state: Vec<f32>,
    pub meta: Vec<u64>,
}

impl RowBlock {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Fails unless the block's arrays fit rows of `dim` weights and
    /// `state_width` state values; `name` names the block in messages.
    pub fn check(&self, name: &str, dim: usize, state_width: usize) -> Result<()> {
        let n = self.ids.len();
        for (what, len, width) in [
            ("weights", self.weights.len(), dim),
            ("state", self.state.len(), state_width),
            ("meta", self.meta.len(), meta::WORDS),
        ] {
            if len != n * width {
                return Err(shape(
                    &format!("{name}['{what}']"),
                    format!("{} values ({n} rows x {width})", n * width),
                    format!("{len} values"),
                ));
            }
        }
        Ok(())
    }

    fn push_row(&mut self, t: &EmbeddingTable, r: u32) {
        self.ids.push(t.meta(r)[meta::ID].load(Relaxed));
        self.weights
            .extend(t.row(r).iter().map(|a| f32::from_bits(a.load(Relaxed))));
        self.state.extend(
            t.row_state(r)
                .iter()
                .map(|a| f32::from_bits(a.load(Relaxed))),
        );
        self.meta.extend(t.meta(r).iter().map(|a| a.load(Relaxed)));
    }
}

/// The rows of `ids` in `table`, in the order of `ids`. With `create`,
/// absent ids get their row first (deterministic initial value, first seen
/// at `first_seen[k]`, or 0), and the count created is returned; without,
/// absent ids are left out. Capacity is checked before anything is created.
pub fn export_rows(
    table: &EmbeddingTable,
    ids: &[u64],
    first_seen: Option<&[i64]>,
    create: bool,
) -> Result<(RowBlock, usize)> {
    if let Some(t) = first_seen {
        if t.len() != ids.len() {
            return Err(shape(
                "first_seen",
                format!("{} elements, one per id", ids.len()),
                format!("{} elements", t.len()),
            ));
        }
    }
    let mut block = RowBlock::default();
    let mut created = 0;
    if create {
        let _creating = table.creation();
        table.check_room(ids)?;
        let _pin = table.begin_write();
        let g = table.guard();
        for (k, &id) in ids.iter().enumerate() {
            let (r, new) = table.get_or_insert(&g, id, first_seen.map_or(0, |t| t[k]))?;
            created += usize::from(new);
            block.push_row(table, r);
        }
    } else {
        let _pin = table.pin();
        let g = table.guard();
        for &id in ids {
            if let Some(r) = table.lookup(&g, id) {
                block.push_row(table, r);
            }
        }
    }
    Ok((block, created))
}

/// A table holding exactly the rows of `block`, configured as `like`.
fn working_table(like: &TableConfig, block: &RowBlock) -> Result<EmbeddingTable> {
    let t = EmbeddingTable::new(TableConfig {
        capacity: block.len().max(1),
        ..*like
    })?;
    block.check("rows", t.dim(), t.state_width())?;
    let store32 = |dst: &[AtomicU32], src: &[f32]| {
        for (d, s) in dst.iter().zip(src) {
            d.store(s.to_bits(), Relaxed);
        }
        Ok(())
    };
    let store64 = |dst: &[AtomicU64], src: &[u64]| {
        for (k, (d, s)) in dst.iter().zip(src).enumerate() {
            // A pulled row is live in the copy whatever its owner did since.
            let v = if k % meta::WORDS == meta::VERSION {
                *s & !meta::DEAD
            } else {
                *s
            };
            d.store(v, Relaxed);
        }
        Ok(())
    };
    t.bulk_load(
        block.len(),
        |w| store32(w, &block.weights),
        |s| store32(s, &block.state),
        |m| store64(m, &block.meta),
        || Ok(()),
    )?;
    Ok(t)
}

/// A model with `model`'s configuration whose field `f` is a working copy
/// of `rows[f]` (when given) or `model`'s own table (shared, not copied),
/// with the global bias state `global` and event count `events_seen`.
/// Training it trains the shard's own tables in place and the working
/// copies locally; `export_rows` then reads the copies back for the push.
pub fn working_model(
    model: &FieldModel,
    rows: &[Option<RowBlock>],
    global: (f32, f32),
    events_seen: u64,
) -> Result<FieldModel> {
    if rows.len() != model.n_fields() {
        return Err(invalid(format!(
            "got row blocks for {} fields, the model has {}",
            rows.len(),
            model.n_fields()
        )));
    }
    let tables = model
        .tables
        .iter()
        .zip(rows)
        .map(|(own, block)| match block {
            Some(b) => working_table(own.config(), b).map(Arc::new),
            None => Ok(own.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FieldModel::from_parts(
        model.cfg.clone(),
        tables,
        global,
        events_seen,
    ))
}

/// Merge one f32 cell: `after` if the cell still holds `before`, else the
/// cell plus `after - before`. A Relaxed load and store, as the kernel's
/// Hogwild stores: a writer racing on the same cell may lose one merge (the
/// table's accepted staleness); a ShardedModel applies the pushes to a shard
/// one at a time in that shard's actor, so there nothing races.
#[inline]
fn merge_f32(cell: &AtomicU32, before: f32, after: f32) {
    if before.to_bits() == after.to_bits() {
        return;
    }
    let cur = cell.load(Relaxed);
    let new = if cur == before.to_bits() {
        after.to_bits()
    } else {
        (f32::from_bits(cur) + (after - before)).to_bits()
    };
    cell.store(new, Relaxed);
}

/// `merge_f32` on the two f32 halves of a packed 64-bit word.
#[inline]
fn merge_pair(cell: &AtomicU64, before: u64, after: u64) {
    if before == after {
        return;
    }
    let half = |cur: u32, b: u32, a: u32| {
        if cur == b {
            a
        } else {
            (f32::from_bits(cur) + (f32::from_bits(a) - f32::from_bits(b))).to_bits()
        }
    };
    let cur = cell.load(Relaxed);
    let lo = half(cur as u32, before as u32, after as u32);
    let hi = half(
        (cur >> 32) as u32,
        (before >> 32) as u32,
        (after >> 32) as u32,
    );
    cell.store(u64::from(lo) | (u64::from(hi) << 32), Relaxed);
}

/// The owner's side of a push: merge a trainer's copy of rows, as pulled
/// (`before`) and as trained (`after`), into `table` (see the design notes:
/// exact where nobody else changed a value, deltas added where someone did).
/// Every id must have a row (the pull created it). Returns the rows merged.
pub fn apply_rows(table: &EmbeddingTable, before: &RowBlock, after: &RowBlock) -> Result<usize> {
    let (d, sw) = (table.dim(), table.state_width());
    before.check("before", d, sw)?;
    after.check("after", d, sw)?;
    if before.ids != after.ids {
        return Err(invalid(format!(
            "before and after must list the same ids in the same order (got {} and {} ids)",
            before.len(),
            after.len()
        )));
    }
    let _pin = table.begin_write();
    let g = table.guard();
    let rows: Vec<u32> = before
        .ids
        .iter()
        .map(|&id| table.lookup(&g, id))
        .collect::<Option<_>>()
        .ok_or_else(|| unknown_ids(before.ids.iter().copied().filter(|&i| !table.contains(i))))?;
    let version = table.version();
    for (k, &r) in rows.iter().enumerate() {
        for ((c, b), a) in table
            .row(r)
            .iter()
            .zip(&before.weights[k * d..(k + 1) * d])
            .zip(&after.weights[k * d..(k + 1) * d])
        {
            merge_f32(c, *b, *a);
        }
        for ((c, b), a) in table
            .row_state(r)
            .iter()
            .zip(&before.state[k * sw..(k + 1) * sw])
            .zip(&after.state[k * sw..(k + 1) * sw])
        {
            merge_f32(c, *b, *a);
        }
        let m = table.meta(r);
        let (mb, ma) = (
            &before.meta[k * meta::WORDS..(k + 1) * meta::WORDS],
            &after.meta[k * meta::WORDS..(k + 1) * meta::WORDS],
        );
        for w in [meta::INTERACTIONS, meta::UPDATES] {
            m[w].fetch_add(ma[w].wrapping_sub(mb[w]), Relaxed);
        }
        m[meta::FIRST_SEEN].fetch_min(ma[meta::FIRST_SEEN], Relaxed);
        m[meta::LAST_UPDATE].fetch_max(ma[meta::LAST_UPDATE], Relaxed);
        merge_pair(&m[meta::BIAS], mb[meta::BIAS], ma[meta::BIAS]);
        // The row-wise accumulator is an f32 in the low half of its word.
        merge_pair(&m[meta::ROW_ACC], mb[meta::ROW_ACC], ma[meta::ROW_ACC]);
        if ma != mb {
            // Tag the row changed (as training's touch does); fetch_max keeps
            // the DEAD bit, above every version.
            m[meta::VERSION].fetch_max(version, Relaxed);
        }
    }
    Ok(rows.len())
}

/// Write the full rows of `block` into `table`, creating absent ids and
/// overwriting present ones (weights, state, metadata; the version word is
/// the table's). Capacity is checked first. Returns the rows created.
pub fn import_rows(table: &EmbeddingTable, block: &RowBlock) -> Result<usize> {
    block.check("rows", table.dim(), table.state_width())?;
    let _creating = table.creation();
    table.check_room(&block.ids)?;
    let (d, sw) = (table.dim(), table.state_width());
    let _pin = table.begin_write();
    let version = table.version();
    let g = table.guard();
    let mut created = 0;
    for (k, &id) in block.ids.iter().enumerate() {
        let first = block.meta[k * meta::WORDS + meta::FIRST_SEEN];
        let (r, new) = table.get_or_insert(&g, id, crate::storage::table::dec_time(first))?;
        created += usize::from(new);
        for (c, v) in table.row(r).iter().zip(&block.weights[k * d..(k + 1) * d]) {
            c.store(v.to_bits(), Relaxed);
        }
        for (c, v) in table
            .row_state(r)
            .iter()
            .zip(&block.state[k * sw..(k + 1) * sw])
        {
            c.store(v.to_bits(), Relaxed);
        }
        let m = table.meta(r);
        for w in meta::CARRIED {
            m[w].store(block.meta[k * meta::WORDS + w], Relaxed);
        }
        m[meta::VERSION].fetch_max(version, Relaxed);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::optim::{Optimizer, OptimizerKind};
    use crate::train::batch::Events;
    use crate::train::driver::TrainOptions;
    use crate::train::mf::{self, MfConfig};
    use crate::train::observer::NoObserver;

    fn model() -> FieldModel {
        let mut t = TableConfig::new(8);
        t.capacity = 1024;
        t.optimizer = Optimizer {
            kind: OptimizerKind::Adagrad,
            learning_rate: 0.1,
            ..Default::default()
        };
        mf::new(MfConfig::logistic(t), None, None).unwrap()
    }

    fn events(n: u64, salt: u64) -> (Vec<u64>, Vec<u64>, Vec<f32>, Vec<i64>) {
        let h = |k: u64, m: u64| crate::kernels::rng::hash2(salt + m, k);
        (
            (0..n).map(|k| h(k, 1) % 13).collect(),
            (0..n).map(|k| h(k, 2) % 17).collect(),
            (0..n).map(|k| (h(k, 3) % 2) as f32).collect(),
            (0..n as i64).collect(),
        )
    }

    fn train(m: &FieldModel, u: &[u64], i: &[u64], y: &[f32], t: &[i64]) {
        let cols: [&[u64]; 2] = [u, i];
        let ev = Events {
            columns: &cols,
            labels: y,
            weights: None,
            timestamps: Some(t),
        };
        let opts = TrainOptions {
            threads: 1,
            count_interactions: true,
            observed: mf::OBSERVED,
            scores: false,
        };
        m.train(&ev, &m.cfg.fields, opts, &NoObserver).unwrap();
    }

    fn all_rows(t: &EmbeddingTable) -> RowBlock {
        let mut ids = t.ids();
        ids.sort_unstable();
        let mut b = export_rows(t, &ids, None, false).unwrap().0;
        for k in 0..b.len() {
            b.meta[k * meta::WORDS + meta::VERSION] = 0;
        }
        b
    }

    /// Placement is the top bits of the id hash: in range, stable, and
    /// about uniform.
    #[test]
    fn shard_of_is_in_range_and_balanced() {
        let mut counts = [0usize; 3];
        for id in 0..30_000u64 {
            let s = shard_of(id, 3);
            assert_eq!(s, shard_of(id, 3));
            counts[s as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert!((0..100u64).all(|id| shard_of(id, 1) == 0));
    }

    /// Pull every user row, train on a working copy, push back: the same
    /// tables bit for bit as training in place (the one-shard case).
    #[test]
    fn pull_train_push_equals_training_in_place() {
        let (u, i, y, t) = events(500, 7);
        let (a, b) = (model(), model());
        train(&a, &u, &i, &y, &t);
        let mut users = u.clone();
        users.sort_unstable();
        users.dedup();
        // First sight of each user: the time of its first event.
        let first: Vec<i64> = users
            .iter()
            .map(|x| t[u.iter().position(|y| y == x).unwrap()])
            .collect();
        let (pulled, created) = export_rows(&b.tables[0], &users, Some(&first), true).unwrap();
        assert_eq!(created, users.len());
        let w = working_model(&b, &[Some(pulled.clone()), None], b.global_state(), 0).unwrap();
        train(&w, &u, &i, &y, &t);
        let after = export_rows(&w.tables[0], &users, None, false).unwrap().0;
        assert_eq!(
            apply_rows(&b.tables[0], &pulled, &after).unwrap(),
            users.len()
        );
        assert_eq!(all_rows(&a.tables[0]), all_rows(&b.tables[0]));
        assert_eq!(all_rows(&a.tables[1]), all_rows(&b.tables[1]));
        assert_eq!(a.global_state(), w.global_state());
    }

    /// One pusher on an unchanged value stores its value exactly, even where
    /// adding the delta would round (0.1 + (1e-9 - 0.1) is 0 in f32); on a
    /// changed value it adds the delta.
    #[test]
    fn merge_is_exact_for_a_single_writer() {
        let cell = AtomicU32::new(0.1f32.to_bits());
        merge_f32(&cell, 0.1, 1e-9);
        assert_eq!(f32::from_bits(cell.load(Relaxed)), 1e-9);
        merge_f32(&cell, 0.5, 0.75);
        assert_eq!(f32::from_bits(cell.load(Relaxed)), 1e-9 + 0.25);
        let word = AtomicU64::new(crate::storage::table::pack_bias(0.1, 2.0));
        let (b, a) = (
            crate::storage::table::pack_bias(0.1, 2.0),
            crate::storage::table::pack_bias(1e-9, 3.0),
        );
        merge_pair(&word, b, a);
        assert_eq!(word.load(Relaxed), a);
    }

    /// Two trainers pushing changes to the same rows: counters add exactly,
    /// values get the sum of both deltas (the second push meets a changed
    /// value), first/last seen are the min/max.
    #[test]
    fn concurrent_pushes_add_their_deltas() {
        let m = model();
        let ids = [1u64, 2, 3];
        let (before, _) = export_rows(&m.tables[0], &ids, Some(&[5, 6, 7]), true).unwrap();
        let bump = |db: f32, dn: u64, t: i64| {
            let mut a = before.clone();
            a.weights.iter_mut().for_each(|w| *w += db);
            a.state.iter_mut().for_each(|s| *s += db);
            for k in 0..a.len() {
                a.meta[k * meta::WORDS + meta::INTERACTIONS] += dn;
                a.meta[k * meta::WORDS + meta::LAST_UPDATE] = crate::storage::table::enc_time(t);
            }
            a
        };
        let (a1, a2) = (bump(0.5, 2, 100), bump(0.25, 3, 90));
        apply_rows(&m.tables[0], &before, &a1).unwrap();
        apply_rows(&m.tables[0], &before, &a2).unwrap();
        let got = export_rows(&m.tables[0], &ids, None, false).unwrap().0;
        for (k, (g, b)) in got.weights.iter().zip(&before.weights).enumerate() {
            assert!((g - (b + 0.75)).abs() < 1e-6, "weight {k}: {g} vs {b}+0.75");
        }
        for k in 0..3 {
            let w = |b: &RowBlock, word: usize| b.meta[k * meta::WORDS + word];
            assert_eq!(w(&got, meta::INTERACTIONS), 5);
            assert_eq!(
                w(&got, meta::LAST_UPDATE),
                crate::storage::table::enc_time(100)
            );
            assert_eq!(w(&got, meta::FIRST_SEEN), w(&before, meta::FIRST_SEEN));
        }
        // Unknown ids and mismatched blocks are refused before any change.
        let mut other = before.clone();
        other.ids[0] = 999;
        assert!(apply_rows(&m.tables[0], &other, &other).is_err());
        assert!(apply_rows(&m.tables[0], &before, &other).is_err());
    }

    /// import_rows copies full rows: a table rebuilt from another's blocks
    /// holds the same rows.
    #[test]
    fn import_rows_rebuilds_a_table() {
        let (u, i, y, t) = events(300, 3);
        let (a, b) = (model(), model());
        train(&a, &u, &i, &y, &t);
        for f in 0..2 {
            let block = all_rows(&a.tables[f]);
            assert_eq!(import_rows(&b.tables[f], &block).unwrap(), block.len());
            assert_eq!(all_rows(&b.tables[f]), block);
        }
    }
}
