//! Monitor bytes: a whole monitor (configuration and state) in one `io`
//! container (`EMBCMONI`, version 3; version 2 is still read).
//!
//! Sections (little-endian fields): config, counters (dim, updates,
//! skipped, clock, dropped), hll (2^14 registers), by_count, by_age (live
//! buckets: index, moments and four sketches each), tracked, records,
//! previous rows, and since version 3 retirement (latest event time, last
//! sweep, dropped and untracked item counts, each tracked item's latest
//! time and retired flag, each previous row's latest time, in the id order
//! of their sections). Version 3 also ends the config with `max_tracked`
//! and `retire_after`. Version 2 bytes decode with the defaults of
//! version 3: nothing retired, `retire_after` None, `max_tracked` the
//! default or the tracked items held, whichever is larger. Decoding validates every invariant the monitor relies on
//! (min <= max, bucket and sketch counts that add up to `updates`, sketch
//! key ranges, sorted distinct ids, sizes), so bytes with a valid checksum
//! but crafted contents fail with `Error::Corrupt` naming the field instead
//! of panicking later in `summary()` or `merge()`.

use super::sketch::{self, Sketch};
use super::{Group, Monitor, MonitorConfig, Prev, Record, Track, HLL_BITS, HLL_SIZE, NO_SLOT};
use crate::error::Result;
use crate::io::{FieldWriter, Fields, Format, Reader, Writer};

/// Version of the `to_bytes` format.
pub const FORMAT_VERSION: u32 = 3;
pub const FORMAT: Format = Format {
    magic: *b"EMBCMONI",
    version: FORMAT_VERSION,
    what: "embcore monitor byte string",
    mistaken_for: &[],
};
/// The previous version, still read.
const FORMAT_V2: Format = Format {
    version: 2,
    ..FORMAT
};
const SECTIONS: u32 = 9;
const NAME: &str = "monitor bytes";
/// Widest row a monitor accepts from bytes.
const MAX_DIM: u64 = 65536;
/// Largest HyperLogLog register value (`hll_add`: 64 − HLL_BITS + 1).
const MAX_RANK: u8 = (64 - HLL_BITS + 1) as u8;
/// Buckets a sketch's store may extend beyond the valid keys (its growth step).
const GROW_SLACK: i64 = 16;

impl Monitor {
    /// The whole monitor (configuration and state) as versioned bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.plan.cfg;
        let mut config = FieldWriter::default();
        config.u64(c.count_limit);
        config.u32(c.per_doubling);
        config.u32(c.age_per_doubling);
        config.f64(c.sample_rate);
        config.u64(c.seed);
        config.u64(c.max_records as u64);
        let (has, (t0, t1)) = match c.track_window {
            Some(w) => (1, w),
            None => (0, (0, 0)),
        };
        config.u8(has);
        config.i64(t0);
        config.i64(t1);
        config.u64(c.track_ids.len() as u64);
        config.u64s(&c.track_ids);
        config.u64(c.milestones.len() as u64);
        config.u64s(&c.milestones);
        config.u64(c.max_tracked as u64);
        config.u8(u8::from(c.retire_after.is_some()));
        config.i64(c.retire_after.unwrap_or(0));

        let mut st = self.lock();
        st.settle();
        let d = st.dim;
        let mut counters = FieldWriter::default();
        counters.u64(d as u64);
        counters.u64(st.updates);
        counters.u64(st.skipped);
        counters.i64(st.clock);
        counters.u64(st.dropped);

        let groups = st.groups.each_ref().map(|groups| {
            let mut w = FieldWriter::default();
            let live: Vec<(usize, &Group)> = groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.m.n > 0)
                .collect();
            w.u64(live.len() as u64);
            for (b, g) in live {
                w.u64(b as u64);
                w.u64(g.m.n);
                for j in 0..4 {
                    w.f64(g.m.sum[j]);
                    w.f64(g.m.sumsq[j]);
                    w.f32(g.m.min[j]);
                    w.f32(g.m.max[j]);
                    let (zero, offset, counts) = g.sketch[j].parts();
                    w.u64(zero);
                    w.i32(offset);
                    w.u64(counts.len() as u64);
                    w.u64s(counts);
                }
            }
            w
        });

        let mut tracked: Vec<(&u64, &Track)> = st.tracked.iter().collect();
        tracked.sort_by_key(|(id, _)| **id);
        let mut retire = FieldWriter::default();
        retire.i64(st.latest);
        retire.i64(st.last_sweep);
        retire.u64(st.dropped_items);
        retire.u64(st.untracked);
        retire.u64(tracked.len() as u64);
        for (_, t) in &tracked {
            retire.i64(t.last);
            retire.u8(u8::from(t.retired));
        }
        let mut tw = FieldWriter::default();
        tw.u64(tracked.len() as u64);
        for (&id, t) in tracked {
            tw.u64(id);
            tw.f64(t.path);
            tw.u64(t.updates);
            if t.slot == NO_SLOT {
                tw.u8(0);
            } else {
                tw.u8(1);
                let s = t.slot as usize;
                tw.f32s(&st.track_rows[2 * s * d..2 * (s + 1) * d]);
            }
        }
        let mut rw = FieldWriter::default();
        rw.u64(st.records.len() as u64);
        for (k, r) in st.records.iter().enumerate() {
            rw.u64(r.id);
            rw.u64(r.count);
            rw.i64(r.timestamp);
            rw.u8(u8::from(r.publish));
            rw.f32s(&st.record_rows[k * d..(k + 1) * d]);
        }
        let mut prev: Vec<(&u64, &Prev)> = st.prev.iter().collect();
        prev.sort_by_key(|(id, _)| **id);
        let mut pw = FieldWriter::default();
        pw.u64(prev.len() as u64);
        retire.u64(prev.len() as u64);
        for (_, p) in &prev {
            retire.i64(p.last);
        }
        for (&id, p) in prev {
            pw.u64(id);
            pw.u64(p.seen);
            pw.i64(p.first_seen);
            let s = p.slot as usize;
            pw.f32s(&st.prev_rows[s * d..(s + 1) * d]);
        }
        let hll = st.hll.clone();
        drop(st);

        let [by_count, by_age] = groups;
        let mut w = Writer::new(Vec::new(), &FORMAT, SECTIONS).expect("writing to memory");
        for payload in [
            &config.0,
            &counters.0,
            &hll,
            &by_count.0,
            &by_age.0,
            &tw.0,
            &rw.0,
            &pw.0,
            &retire.0,
        ] {
            w.section(payload).expect("writing to memory");
        }
        w.finish().expect("all sections written").0
    }

    /// Rebuild a monitor from `to_bytes` output. Truncated, corrupted,
    /// foreign or inconsistent bytes fail with `Error::Corrupt` naming the
    /// field and its byte offset.
    pub fn from_bytes(bytes: &[u8]) -> Result<Monitor> {
        let v2 =
            bytes.len() >= 12 && bytes[..8] == FORMAT.magic && bytes[8..12] == 2u32.to_le_bytes();
        let format = if v2 { &FORMAT_V2 } else { &FORMAT };
        let mut r = Reader::open(bytes, bytes.len() as u64, NAME, format)?;
        let config = r.section("config")?;
        let mut cfg = read_config(&mut config.fields(), v2)?;
        if v2 {
            cfg.max_tracked = cfg.max_tracked.max(v2_tracked_items(bytes)?);
        }
        let m = Monitor::new(cfg)
            .map_err(|e| config.fields().error_at(config.offset, "configuration", e))?;
        {
            let mut guard = m.lock();
            let st = &mut *guard;
            let counters = r.section("counters")?;
            let mut f = counters.fields();
            let d = f.u64("dim")?;
            if d > MAX_DIM {
                return Err(f.error_at(counters.offset, "dim", format!("{d} exceeds {MAX_DIM}")));
            }
            let d = d as usize;
            st.dim = d;
            st.updates = f.u64("updates")?;
            st.skipped = f.u64("skipped updates")?;
            st.clock = f.i64("clock")?;
            st.dropped = f.u64("dropped records")?;
            f.finish()?;

            let hll = r.section("hll")?;
            if hll.bytes.len() != HLL_SIZE {
                return Err(hll.fields().error(
                    "registers",
                    format!("{} registers, expected {HLL_SIZE}", hll.bytes.len()),
                ));
            }
            if let Some(k) = hll.bytes.iter().position(|&x| x > MAX_RANK) {
                let f = Fields::new(&hll.bytes, hll.offset + k as u64, &hll.context);
                return Err(f.error(
                    &format!("register {k}"),
                    format!("{} exceeds {MAX_RANK}", hll.bytes[k]),
                ));
            }
            st.hll.copy_from_slice(&hll.bytes);

            for (g, name) in [(0, "by_count"), (1, "by_age")] {
                let s = r.section(name)?;
                read_groups(&mut s.fields(), &mut st.groups[g], st.updates)?;
            }

            let s = r.section("tracked")?;
            let mut f = s.fields();
            let at = f.offset();
            let n = f.count("tracked items", 25)?;
            no_rows_without_dim(&f, d, n, "tracked items")?;
            if n > m.plan.cfg.max_tracked {
                return Err(f.error_at(
                    at,
                    "tracked items",
                    format!("{n} exceeds max_tracked {}", m.plan.cfg.max_tracked),
                ));
            }
            let mut last = None;
            let mut tracked_order = Vec::with_capacity(n);
            for _ in 0..n {
                let id = ascending(&mut f, "id", &mut last)?;
                let at = f.offset();
                let path = f.f64("path length")?;
                if path.is_nan() || path < 0.0 {
                    return Err(f.error_at(at, "path length", format!("{path} is not >= 0")));
                }
                let updates = f.u64("updates")?;
                let mut t = Track {
                    path,
                    updates,
                    ..Track::new(i64::MIN)
                };
                if f.flag("has rows")? {
                    let rows = f.f32s(2 * d, "rows")?;
                    t.slot = (st.track_rows.len() / (2 * d)) as u32;
                    st.track_rows.extend_from_slice(&rows);
                }
                st.tracked.insert(id, t);
                tracked_order.push(id);
            }
            f.finish()?;

            let s = r.section("records")?;
            let mut f = s.fields();
            let at = f.offset();
            let n = f.count("records", 25)?;
            no_rows_without_dim(&f, d, n, "records")?;
            if n > m.plan.cfg.max_records {
                return Err(f.error_at(
                    at,
                    "records",
                    format!("{n} exceeds max_records {}", m.plan.cfg.max_records),
                ));
            }
            for k in 0..n {
                let at = f.offset();
                let rec = Record {
                    id: f.u64("record id")?,
                    count: f.u64("record count")?,
                    timestamp: f.i64("record timestamp")?,
                    publish: f.flag("record publish flag")?,
                };
                let row = f.f32s(d, "record row")?;
                if !st.tracked.contains_key(&rec.id) {
                    return Err(f.error_at(
                        at,
                        &format!("record {k}"),
                        format!("id {} is not a tracked item", rec.id),
                    ));
                }
                if !rec.publish && !st.milestones_recorded.insert((rec.id, rec.count)) {
                    return Err(f.error_at(
                        at,
                        &format!("record {k}"),
                        format!("milestone ({}, {}) appears twice", rec.id, rec.count),
                    ));
                }
                if let Some(t) = st.tracked.get_mut(&rec.id) {
                    t.last = t.last.max(rec.timestamp);
                }
                st.records.push(rec);
                st.record_rows.extend_from_slice(&row);
            }
            f.finish()?;

            let s = r.section("previous rows")?;
            let mut f = s.fields();
            let n = f.count("previous rows", 24)?;
            no_rows_without_dim(&f, d, n, "previous rows")?;
            let mut last = None;
            let mut prev_order = Vec::with_capacity(n);
            for _ in 0..n {
                let id = ascending(&mut f, "id", &mut last)?;
                let seen = f.u64("times seen")?;
                let first_seen = f.i64("first seen")?;
                let row = f.f32s(d, "row")?;
                let slot = (st.prev_rows.len() / d.max(1)) as u32;
                st.prev.insert(
                    id,
                    Prev {
                        slot,
                        seen,
                        first_seen,
                        last: first_seen,
                    },
                );
                st.prev_rows.extend_from_slice(&row);
                prev_order.push(id);
            }
            f.finish()?;

            if !v2 {
                let s = r.section("retirement")?;
                let mut f = s.fields();
                st.latest = f.i64("latest event time")?;
                st.last_sweep = f.i64("last sweep")?;
                st.dropped_items = f.u64("dropped items")?;
                st.untracked = f.u64("untracked items")?;
                let at = f.offset();
                let n = f.count("tracked items", 9)?;
                if n != tracked_order.len() {
                    return Err(f.error_at(
                        at,
                        "tracked items",
                        format!("{n}, but the tracked section has {}", tracked_order.len()),
                    ));
                }
                for id in &tracked_order {
                    let t = st.tracked.get_mut(id).expect("decoded above");
                    t.last = f.i64("latest time")?;
                    t.retired = f.flag("retired flag")?;
                    st.retired_count += usize::from(t.retired);
                }
                let at = f.offset();
                let n = f.count("previous rows", 8)?;
                if n != prev_order.len() {
                    return Err(f.error_at(
                        at,
                        "previous rows",
                        format!(
                            "{n}, but the previous rows section has {}",
                            prev_order.len()
                        ),
                    ));
                }
                for id in &prev_order {
                    st.prev.get_mut(id).expect("decoded above").last = f.i64("latest time")?;
                }
                f.finish()?;
            }
        }
        r.finish()?;
        Ok(m)
    }
}

/// The tracked items held by version-2 bytes (their config has no
/// `max_tracked`, which must then hold them all).
fn v2_tracked_items(bytes: &[u8]) -> Result<usize> {
    let mut r = Reader::open(bytes, bytes.len() as u64, NAME, &FORMAT_V2)?;
    for what in ["config", "counters", "hll", "by_count", "by_age"] {
        r.section(what)?;
    }
    let s = r.section("tracked")?;
    let n = s.fields().count("tracked items", 25)?;
    Ok(n)
}

fn read_config(f: &mut Fields<'_>, v2: bool) -> Result<MonitorConfig> {
    let count_limit = f.u64("count_limit")?;
    let per_doubling = f.u32("per_doubling")?;
    let age_per_doubling = f.u32("age_per_doubling")?;
    let sample_rate = f.f64("sample_rate")?;
    let seed = f.u64("seed")?;
    let at = f.offset();
    let max_records = f.u64("max_records")?;
    let max_records = usize::try_from(max_records)
        .map_err(|_| f.error_at(at, "max_records", format!("{max_records} is too large")))?;
    let has_window = f.flag("track_window flag")?;
    let (t0, t1) = (f.i64("track_window start")?, f.i64("track_window end")?);
    let n = f.count("track_ids", 8)?;
    let at = f.offset();
    let track_ids = f.u64s(n, "track_ids")?;
    if let Some(k) = track_ids.windows(2).position(|w| w[0] >= w[1]) {
        return Err(f.error_at(
            at + 8 * (k as u64 + 1),
            "track_ids",
            "not sorted and distinct",
        ));
    }
    let n = f.count("milestones", 8)?;
    let milestones = f.u64s(n, "milestones")?;
    let (mut max_tracked, mut retire_after) = (super::DEFAULT_MAX_TRACKED, None);
    if !v2 {
        let at = f.offset();
        let m = f.u64("max_tracked")?;
        max_tracked = usize::try_from(m)
            .map_err(|_| f.error_at(at, "max_tracked", format!("{m} is too large")))?;
        let has = f.flag("retire_after flag")?;
        let a = f.i64("retire_after")?;
        retire_after = has.then_some(a);
    }
    f.finish()?;
    Ok(MonitorConfig {
        max_tracked,
        retire_after,
        count_limit,
        per_doubling,
        age_per_doubling,
        sample_rate,
        track_ids,
        track_window: has_window.then_some((t0, t1)),
        milestones,
        max_records,
        seed,
    })
}

/// A u64 id greater than the previous one.
fn ascending(f: &mut Fields<'_>, field: &str, last: &mut Option<u64>) -> Result<u64> {
    let at = f.offset();
    let id = f.u64(field)?;
    if last.is_some_and(|l| l >= id) {
        return Err(f.error_at(
            at,
            field,
            format!("{id} is not after {}", last.unwrap_or(0)),
        ));
    }
    *last = Some(id);
    Ok(id)
}

fn no_rows_without_dim(f: &Fields<'_>, d: usize, n: usize, what: &str) -> Result<()> {
    if d == 0 && n > 0 {
        return Err(f.error(
            what,
            format!("{n} entries but the monitor has no rows (dim 0)"),
        ));
    }
    Ok(())
}

/// The live buckets of one grouping into `groups`; their counts must add
/// up to `updates`.
fn read_groups(f: &mut Fields<'_>, groups: &mut [Group], updates: u64) -> Result<()> {
    let (kmin, kmax) = (
        i64::from(sketch::key(sketch::MIN_VALUE).expect("indexable")),
        i64::from(sketch::key(f32::MAX).expect("indexable")),
    );
    let at = f.offset();
    let live = f.count("buckets", 16)?;
    let mut total = 0u64;
    let mut last = None;
    for _ in 0..live {
        let b = ascending(f, "bucket", &mut last)?;
        let slot = usize::try_from(b).ok().filter(|&b| b < groups.len());
        let Some(slot) = slot else {
            return Err(f.error(
                "bucket",
                format!("{b} is out of range (the grouping has {})", groups.len()),
            ));
        };
        let n_at = f.offset();
        let n = f.u64("bucket count")?;
        if n == 0 {
            return Err(f.error_at(n_at, "bucket count", "0 in a live bucket"));
        }
        total = total
            .checked_add(n)
            .ok_or_else(|| f.error_at(n_at, "bucket count", "counts overflow"))?;
        let mut g = Group::new();
        g.m.n = n;
        for j in 0..4 {
            let stat = super::STATISTICS[j];
            let sums_at = f.offset();
            g.m.sum[j] = f.f64("sum")?;
            g.m.sumsq[j] = f.f64("sum of squares")?;
            if g.m.sum[j].is_nan() || g.m.sumsq[j].is_nan() || g.m.sumsq[j] < 0.0 {
                return Err(f.error_at(sums_at, stat, "sums are NaN or negative"));
            }
            let mm_at = f.offset();
            g.m.min[j] = f.f32("min")?;
            g.m.max[j] = f.f32("max")?;
            if g.m.min[j].is_nan() || g.m.max[j].is_nan() || g.m.min[j] > g.m.max[j] {
                return Err(f.error_at(
                    mm_at,
                    stat,
                    format!("min {} is not <= max {}", g.m.min[j], g.m.max[j]),
                ));
            }
            let zero = f.u64("sketch zero count")?;
            let off_at = f.offset();
            let offset = f.i32("sketch offset")?;
            let len = f.count("sketch buckets", 8)?;
            let lo = i64::from(offset);
            if len > 0 && (lo < kmin - GROW_SLACK || lo + len as i64 > kmax + 1 + GROW_SLACK) {
                return Err(f.error_at(
                    off_at,
                    stat,
                    format!(
                        "sketch keys [{lo}, {}) outside [{}, {}]",
                        lo + len as i64,
                        kmin - GROW_SLACK,
                        kmax + 1 + GROW_SLACK
                    ),
                ));
            }
            let counts_at = f.offset();
            let counts = f.u64s(len, "sketch buckets")?;
            let mut sum = zero;
            for (i, &c) in counts.iter().enumerate() {
                let k = lo + i as i64;
                if c != 0 && !(kmin..=kmax).contains(&k) {
                    return Err(f.error_at(
                        counts_at + 8 * i as u64,
                        stat,
                        format!("sketch count at invalid key {k}"),
                    ));
                }
                sum = sum.saturating_add(c);
            }
            if sum != n {
                return Err(f.error_at(
                    counts_at,
                    stat,
                    format!("sketch holds {sum} values, the bucket {n}"),
                ));
            }
            g.sketch[j] = Sketch::from_parts(zero, offset, counts);
        }
        groups[slot] = g;
    }
    if total != updates {
        return Err(f.error_at(
            at,
            "buckets",
            format!("bucket counts add up to {total}, but updates is {updates}"),
        ));
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::io::{reframe, section_spans};

    fn sample() -> Monitor {
        let m = Monitor::new(MonitorConfig {
            sample_rate: 1.0,
            milestones: vec![1, 2, 3],
            track_ids: vec![2, 40],
            max_records: 20,
            ..Default::default()
        })
        .unwrap();
        for k in 0..4u64 {
            let rows: Vec<f32> = (0..9).map(|j| ((k * 9 + j) as f32 * 0.3).sin()).collect();
            m.observe(&[1, 2, 3], &rows, 3, None, Some(&[k as i64; 3]))
                .unwrap();
        }
        m
    }

    /// Version-2 bytes (no retirement section, no bounds in the config)
    /// still decode, with nothing retired and the default bounds.
    #[test]
    fn version_2_bytes_decode() {
        let m = sample();
        let b = m.to_bytes();
        let spans = section_spans(&b);
        let mut w = Writer::new(Vec::new(), &FORMAT_V2, 8).unwrap();
        for (k, &(start, n)) in spans.iter().take(8).enumerate() {
            // Version 3 appends max_tracked (8), a flag (1) and retire_after (8).
            let n = if k == 0 { n - 17 } else { n };
            w.section(&b[start..start + n]).unwrap();
        }
        let v2 = w.finish().unwrap().0;
        assert_eq!(&v2[8..12], &2u32.to_le_bytes());
        let back = Monitor::from_bytes(&v2).unwrap();
        assert_eq!(back.config(), m.config());
        assert_eq!(back.trajectories(), m.trajectories());
        let (mut s1, mut s2) = (back.summary(), m.summary());
        (s1.memory_bytes, s2.memory_bytes) = (0, 0);
        assert_eq!(s1, s2);
        // Re-encoded as version 3, equal to the original but for the latest
        // times, which version 2 did not keep.
        let again = Monitor::from_bytes(&back.to_bytes()).unwrap();
        assert_eq!(again.trajectories(), m.trajectories());
    }

    #[test]
    fn crafted_fields_never_panic_and_what_decodes_is_usable() {
        let b = sample().to_bytes();
        let spans = section_spans(&b);
        for (index, &(start, n)) in spans.iter().enumerate() {
            let payload = &b[start..start + n];
            // Every byte of small sections, a spread of positions in large
            // ones (the HLL registers, the sketches), to stay fast in debug.
            for at in (0..n).step_by((n / 96).max(1)) {
                for value in [0u8, 1, 0x80, 0xff] {
                    let mut p = payload.to_vec();
                    p[at] = value;
                    let x = reframe(&b, index, &p);
                    match Monitor::from_bytes(&x) {
                        Ok(m) => {
                            m.summary();
                            m.trajectories();
                            m.path_efficiency();
                            if let Err(e) = m.merge(&m) {
                                assert!(e.to_string().contains("overflow"), "{e}");
                            }
                        }
                        Err(Error::Corrupt {
                            offset: Some(_), ..
                        }) => {}
                        Err(e) => panic!("section {index} byte {at} = {value}: {e:?}"),
                    }
                }
            }
            // Cut payloads.
            for cut in (0..n).step_by((n / 32).max(1)) {
                let x = reframe(&b, index, &payload[..cut]);
                assert!(
                    matches!(Monitor::from_bytes(&x), Err(Error::Corrupt { .. })),
                    "{index} {cut}"
                );
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let b = sample().to_bytes();
        let (start, n) = section_spans(&b)[3];
        let mut p = b[start..start + n].to_vec();
        // First live bucket, statistic 0: min at payload byte 40, max at 44.
        p[40..44].copy_from_slice(&5f32.to_le_bytes());
        p[44..48].copy_from_slice(&1f32.to_le_bytes());
        let Err(e) = Monitor::from_bytes(&reframe(&b, 3, &p)) else {
            panic!("min > max decoded")
        };
        assert_eq!(
            e,
            Error::Corrupt {
                what: "monitor bytes: by_count: drift: min 5 is not <= max 1".into(),
                offset: Some((start + 40) as u64),
            }
        );
    }
}
