//! Table snapshots: one table in the `io` container, written atomically.
//!
//! Sections of an `EMBCSNAP` container (version 2; little-endian fields):
//! ```text
//! header:  dim u32, state_width u32, optimizer u8, seed u64, rows u64,
//!          capacity u64, init_scale f32, learning_rate f32, l2 f32,
//!          max_norm f32, eps f32, initial_accumulator f32
//! extra:   opaque model-level bytes
//! weights: rows*dim f32 | optimizer state: rows*state_width f32 |
//! metadata: rows*8 u64
//! ```
//! Model files hold their tables as the same five sections
//! (`write_sections`, `read_sections`). Version 1 files (one checksum over
//! the whole file) are refused with a message naming the version.

use crate::error::{Error, Result};
use crate::io::{FieldWriter, Fields, Format, Reader, Writer};
use crate::kernels::optim::{Optimizer, OptimizerKind};
use crate::storage::table::{meta, EmbeddingTable, TableConfig};
use crc32fast::Hasher;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

pub const VERSION: u32 = 2;
pub const FORMAT: Format = Format {
    magic: *b"EMBCSNAP",
    version: VERSION,
    what: "embcore table snapshot",
    mistaken_for: &[(
        b"EMBCMODL",
        "it is a model file: use MatrixFactorization.load, FieldAwareFM.load \
         or FactorizationMachine.load",
    )],
};
/// Sections per table.
pub const SECTIONS: u32 = 5;
const CHUNK: usize = 1 << 18;

fn header(t: &EmbeddingTable, rows: usize) -> Vec<u8> {
    let c = t.config();
    let o = &c.optimizer;
    let mut h = FieldWriter::default();
    h.u32(c.dim as u32);
    h.u32(t.state_width() as u32);
    h.u8(o.kind.code());
    h.u64(c.seed);
    h.u64(rows as u64);
    h.u64(c.capacity as u64);
    for v in [
        c.init_scale,
        o.learning_rate,
        o.l2,
        o.max_norm,
        o.eps,
        o.initial_accumulator,
    ] {
        h.f32(v);
    }
    h.0
}

/// Write `src` as one section of `bytes` bytes per element: `fill` copies a
/// chunk of elements into a buffer (Relaxed loads), `Writer::put` checksums
/// and writes it. With more than one chunk a second thread fills and
/// checksums the next buffer while this one writes (two buffers in turn), so
/// the copy and the checksum hide behind the write instead of adding to it
/// (with the checksum on the writing thread, a 1.6 GB save spent 0.34 s
/// between its write calls). A failed write drops the channels: the filler
/// stops at its next buffer and is joined.
fn put_region<W: Write, T: Sync>(
    w: &mut Writer<W>,
    src: &[T],
    bytes: usize,
    fill: impl Fn(&[T], &mut [u8]) + Sync,
) -> std::io::Result<()> {
    w.begin((src.len() * bytes) as u64)?;
    if src.len() <= CHUNK {
        let mut buf = vec![0u8; src.len() * bytes];
        fill(src, &mut buf);
        w.put(&buf)?;
        return w.end();
    }
    std::thread::scope(|scope| -> std::io::Result<()> {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Hasher)>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            empty_tx
                .send(vec![0u8; CHUNK * bytes])
                .expect("the receiver is alive");
        }
        let fill = &fill;
        scope.spawn(move || {
            for chunk in src.chunks(CHUNK) {
                let Ok(mut buf) = empty_rx.recv() else { return };
                buf.truncate(chunk.len() * bytes); // the last chunk only
                fill(chunk, &mut buf);
                let mut hash = Hasher::new();
                hash.update(&buf);
                if full_tx.send((buf, hash)).is_err() {
                    return;
                }
            }
        });
        for (buf, hash) in full_rx {
            w.put_hashed(&buf, &hash)?;
            let _ = empty_tx.send(buf);
        }
        Ok(())
    })?;
    w.end()
}

/// 32-bit cells, copied four at a time with `simd::load_quads` (Relaxed
/// loads, as `put_words` does one by one).
fn put_floats<W: Write>(w: &mut Writer<W>, src: &[AtomicU32]) -> std::io::Result<()> {
    put_region(w, src, 4, crate::kernels::simd::load_quads)
}

fn put_words<W: Write, const N: usize, A: Sync>(
    w: &mut Writer<W>,
    src: &[A],
    load: impl Fn(&A) -> [u8; N] + Sync,
) -> std::io::Result<()> {
    put_region(w, src, N, |chunk, buf| {
        for (a, out) in chunk.iter().zip(buf.chunks_exact_mut(N)) {
            out.copy_from_slice(&load(a));
        }
    })
}

/// Write `table` (and opaque model-level `extra` bytes) to `path` atomically.
/// Rows updated concurrently with the save are captured as they are when read.
pub fn save(table: &EmbeddingTable, path: &Path, extra: &[u8]) -> Result<u64> {
    // A table that can evict is saved from a compacted copy of its live rows
    // (an eviction starting during the save would otherwise leave rows
    // marked dead in the file). A table without a lifecycle never evicts,
    // so it is written straight from its memory.
    let copy = if table.lifecycle().is_some() || !table.is_compact() {
        Some(table.copy()?)
    } else {
        None
    };
    let table = copy.as_ref().unwrap_or(table);
    let pin = table.pin();
    // Rows inserted during the save are not saved: the count is taken once.
    let n = table.len();
    crate::io::file::save(path, |file| {
        let mut w = Writer::new(file, &FORMAT, SECTIONS)?;
        write_sections(&mut w, table, n, extra, &pin)?;
        w.finish().map(|_| ())
    })
}

/// Write the first `n` rows of a table (`n <= len()`) and `extra` as the
/// five table sections. The caller holds `pinned`, taken before it checked
/// that the table was compact (rows evicted since are not reused meanwhile).
pub fn write_sections<W: Write>(
    w: &mut Writer<W>,
    table: &EmbeddingTable,
    n: usize,
    extra: &[u8],
    pinned: &crate::storage::table::Pin<'_>,
) -> std::io::Result<()> {
    let _ = pinned;
    if n > table.len() {
        return Err(std::io::Error::other(
            "write_sections needs a table with at least n rows",
        ));
    }
    w.section(&header(table, n))?;
    w.section(extra)?;
    put_floats(w, &table.weights_region()[..n * table.dim()])?;
    put_floats(w, &table.state_region()[..n * table.state_width()])?;
    put_words(
        w,
        &table.meta_region()[..n * meta::WORDS],
        |a: &AtomicU64| a.load(Relaxed).to_le_bytes(),
    )
}

/// Read a section of little-endian words from `r` straight into a region of
/// a table that `read_sections` has just created and not yet shared.
fn read_into<T, R: Read>(r: &mut Reader<R>, dst: &[T], what: &str) -> Result<()> {
    let bytes = std::mem::size_of_val(dst);
    r.begin(what, Some(bytes as u64))?;
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(8 << 20);
        // SAFETY: `dst` (atomics: `UnsafeCell`s of plain integers) belongs to
        // a table created by `read_sections` and not yet visible to any other
        // thread, so nothing else accesses it while this byte view lives; on
        // the little-endian targets embcore supports, the file's bytes are
        // the words' in-memory bytes; `done + n <= bytes` stays inside `dst`.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut((dst.as_ptr() as *mut u8).add(done), n) };
        r.read_exact(chunk, "rows")?;
        done += n;
    }
    r.end()
}

#[cfg(not(target_endian = "little"))]
compile_error!("embcore snapshots are implemented for little-endian targets only");

/// Read a snapshot written by `save`: (table, extra bytes). `capacity`
/// overrides the saved capacity when given. Sizes are checked against the
/// file length before anything is allocated, sections are read straight into
/// the new table, and every checksum is verified before the table is returned.
pub fn load(path: &Path, capacity: Option<usize>) -> Result<(EmbeddingTable, Vec<u8>)> {
    let (file, len) = crate::io::file::open(path)?;
    let file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut r = Reader::open(file, len, &path.display().to_string(), &FORMAT)?;
    let out = read_sections(&mut r, capacity, None, "")?;
    r.finish()?;
    Ok(out)
}

/// The table configuration and row count in a header section.
fn parse_header(f: &mut Fields<'_>, capacity: Option<usize>) -> Result<(TableConfig, usize)> {
    let dim = f.u32("dim")? as usize;
    let at = f.offset();
    let state_width = f.u32("state width")? as usize;
    let code_at = f.offset();
    let kind_code = f.u8("optimizer")?;
    let seed = f.u64("seed")?;
    let rows_at = f.offset();
    let rows = f.u64("rows")?;
    let saved_capacity = f.u64("capacity")?;
    let mut v = [0f32; 6];
    for (x, name) in v.iter_mut().zip([
        "init_scale",
        "learning_rate",
        "l2",
        "max_norm",
        "eps",
        "initial_accumulator",
    ]) {
        *x = f.f32(name)?;
    }
    f.finish()?;
    let kind = OptimizerKind::from_code(kind_code)
        .ok_or_else(|| f.error_at(code_at, "optimizer", format!("unknown code {kind_code}")))?;
    if kind.state_width(dim) != state_width {
        return Err(f.error_at(
            at,
            "state width",
            format!("{state_width} does not match optimizer {}", kind.name()),
        ));
    }
    let rows = usize::try_from(rows)
        .map_err(|_| f.error_at(rows_at, "rows", format!("{rows} is too large")))?;
    let cfg = TableConfig {
        dim,
        capacity: capacity
            .unwrap_or(usize::try_from(saved_capacity).unwrap_or(usize::MAX))
            .max(rows),
        seed,
        init_scale: v[0],
        optimizer: Optimizer {
            kind,
            learning_rate: v[1],
            l2: v[2],
            max_norm: v[3],
            eps: v[4],
            initial_accumulator: v[5],
        },
    };
    cfg.validate()
        .map_err(|e| f.error_at(0, "header", format!("invalid table settings: {e}")))?;
    Ok((cfg, rows))
}

/// Read the five table sections from `r` into a new table (with `lifecycle`
/// when given): (table, extra bytes). `label` ("table 'item': ", or empty)
/// prefixes section names in errors. Every row section's length is checked
/// against the header before the table is allocated.
pub fn read_sections<R: Read>(
    r: &mut Reader<R>,
    capacity: Option<usize>,
    lifecycle: Option<crate::storage::lifecycle::Lifecycle>,
    label: &str,
) -> Result<(EmbeddingTable, Vec<u8>)> {
    let head = r.section(&format!("{label}header"))?;
    let capacity_given = capacity.is_some();
    let (cfg, rows) = parse_header(&mut head.fields(), capacity)?;
    let extra = r.section(&format!("{label}extra"))?.bytes;
    // The row sections must fit in what is left before the table (sized by
    // the header) is allocated.
    let per_row =
        (cfg.dim + cfg.optimizer.kind.state_width(cfg.dim)) as u64 * 4 + 8 * meta::WORDS as u64;
    let need = (rows as u64)
        .checked_mul(per_row)
        .and_then(|b| b.checked_add(3 * crate::io::SECTION_OVERHEAD));
    let left = r.bytes_left();
    if need.is_none_or(|b| b > left) {
        return Err(r.error(
            format!(
                "{label}header: {rows} rows of {per_row} bytes do not fit in the {left} bytes \
                 that remain (truncated?)"
            ),
            head.offset,
        ));
    }
    let (dim, capacity) = (cfg.dim, cfg.capacity);
    let table = match lifecycle {
        Some(lc) => EmbeddingTable::with_lifecycle(cfg, lc),
        None => EmbeddingTable::new(cfg),
    }
    .map_err(|e| {
        if capacity_given {
            // The caller's capacity= is what cannot be made, not the file.
            e
        } else {
            r.error(
                format!(
                    "{label}header: a table of capacity {capacity} and dim {dim} cannot be \
                     made: {e}"
                ),
                head.offset,
            )
        }
    })?;
    let r = std::cell::RefCell::new(r);
    table
        .bulk_load(
            rows,
            |dst| read_into(&mut r.borrow_mut(), dst, &format!("{label}weights")),
            |dst| read_into(&mut r.borrow_mut(), dst, &format!("{label}optimizer state")),
            |dst| {
                read_into(&mut r.borrow_mut(), dst, &format!("{label}metadata"))?;
                // Saved tables hold live rows only: a row marked evicted
                // would be indexed yet invisible to every reader.
                let dead = dst
                    .chunks_exact(crate::storage::table::meta::WORDS)
                    .position(|m| {
                        m[crate::storage::table::meta::VERSION]
                            .load(std::sync::atomic::Ordering::Relaxed)
                            & crate::storage::table::meta::DEAD
                            != 0
                    });
                match dead {
                    Some(k) => Err(crate::error::corrupt(format!(
                        "{label}metadata: row {k} is marked evicted"
                    ))),
                    None => Ok(()),
                }
            },
            || Ok(()),
        )
        .map_err(|e| match e {
            // "id 7 appears twice": name the file and the section.
            Error::Corrupt { what, offset: None } => r
                .borrow()
                .error(format!("{label}metadata: {what}"), head.offset),
            other => other,
        })?;
    Ok((table, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EmbeddingTable {
        let mut c = TableConfig::new(3);
        c.capacity = 100;
        let t = EmbeddingTable::new(c).unwrap();
        t.assign(
            &[5, 9, 1 << 60],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            -4,
        )
        .unwrap();
        t
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("embcore-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.emb");
        let t = sample();
        save(&t, &p, b"xyz").unwrap();
        let (u, extra) = load(&p, None).unwrap();
        assert_eq!(extra, b"xyz");
        assert_eq!(u.ids(), t.ids());
        assert_eq!(
            u.meta_column(meta::FIRST_SEEN),
            t.meta_column(meta::FIRST_SEEN)
        );
        let mut a = vec![0.0; 9];
        u.gather(&[5, 9, 1 << 60], &mut a, None).unwrap();
        assert_eq!(a, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(
                matches!(load(&p, None), Err(Error::Corrupt { .. })),
                "cut {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let k = flipped.len() - 10;
        flipped[k] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        assert!(matches!(load(&p, None), Err(Error::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bytes of a section as the one-thread loop writes it: the reference
    /// for the pipelined `put_region`.
    fn reference_section(src: &[AtomicU32]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &FORMAT, 1).unwrap();
        w.begin((src.len() * 4) as u64).unwrap();
        for a in src {
            w.put(&a.load(Relaxed).to_le_bytes()).unwrap();
        }
        w.end().unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn a_region_of_many_chunks_is_written_as_one_loop_writes_it() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let src: Vec<AtomicU32> = (0..n as u32)
                .map(|k| AtomicU32::new(k.wrapping_mul(2_654_435_761)))
                .collect();
            let mut w = Writer::new(Vec::new(), &FORMAT, 1).unwrap();
            put_floats(&mut w, &src).unwrap();
            assert_eq!(w.finish().unwrap().0, reference_section(&src), "{n} cells");
        }
    }

    /// Fails every write after `left` bytes.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if b.len() > self.left {
                return Err(std::io::Error::other("disk full"));
            }
            self.left -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_mid_region_returns_its_error_and_stops_the_filler() {
        let src: Vec<AtomicU32> = (0..4 * CHUNK as u32).map(AtomicU32::new).collect();
        // The preamble and the section length go first (28 bytes).
        for left in [0, 100, 4 * CHUNK + 50, 12 * CHUNK] {
            let mut w = Writer::new(Failing { left: left + 28 }, &FORMAT, 1).unwrap();
            let err = put_floats(&mut w, &src).unwrap_err();
            assert_eq!(err.to_string(), "disk full", "after {left} bytes");
        }
    }
}
