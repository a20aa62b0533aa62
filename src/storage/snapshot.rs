//! Table snapshots: a versioned, checksummed binary file written atomically.
//!
//! Layout (little-endian):
//! ```text
//! magic  "EMBCSNAP"            8 bytes
//! version u32, header_len u32
//! header: dim u32, state_width u32, optimizer u8, 7 pad bytes, seed u64,
//!         rows u64, capacity u64, init_scale f32, learning_rate f32,
//!         l2 f32, max_norm f32, eps f32, initial_accumulator f32
//! extra_len u64, extra bytes   (model-level data, e.g. global bias)
//! weights  rows*dim f32 | state rows*state_width f32 | meta rows*8 u64
//! crc32 of everything above    u32
//! ```
//! Saving writes `path.tmp-<pid>`, fsyncs it, renames it over `path` and
//! fsyncs the directory: a crash at any point leaves the previous file whole.

use crate::error::{Error, Result};
use crate::kernels::optim::{Optimizer, OptimizerKind};
use crate::storage::table::{meta, EmbeddingTable, TableConfig};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

const MAGIC: &[u8; 8] = b"EMBCSNAP";
pub const VERSION: u32 = 1;
const HEADER_LEN: u32 = 4 + 4 + 1 + 7 + 8 + 8 + 8 + 6 * 4;
const CHUNK: usize = 1 << 18;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    crate::error::io(path, &e)
}

fn header(t: &EmbeddingTable, rows: usize) -> Vec<u8> {
    let c = t.config();
    let o = &c.optimizer;
    let mut h = Vec::with_capacity(HEADER_LEN as usize + 16);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&HEADER_LEN.to_le_bytes());
    h.extend_from_slice(&(c.dim as u32).to_le_bytes());
    h.extend_from_slice(&(t.state_width() as u32).to_le_bytes());
    h.push(o.kind.code());
    h.extend_from_slice(&[0u8; 7]);
    h.extend_from_slice(&c.seed.to_le_bytes());
    h.extend_from_slice(&(rows as u64).to_le_bytes());
    h.extend_from_slice(&(c.capacity as u64).to_le_bytes());
    for v in [
        c.init_scale,
        o.learning_rate,
        o.l2,
        o.max_norm,
        o.eps,
        o.initial_accumulator,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
    fn put_u32s(&mut self, src: &[AtomicU32], buf: &mut Vec<u8>) -> std::io::Result<()> {
        for chunk in src.chunks(CHUNK) {
            buf.clear();
            for a in chunk {
                buf.extend_from_slice(&a.load(Relaxed).to_le_bytes());
            }
            self.put(buf)?;
        }
        Ok(())
    }
    fn put_u64s(&mut self, src: &[AtomicU64], buf: &mut Vec<u8>) -> std::io::Result<()> {
        for chunk in src.chunks(CHUNK) {
            buf.clear();
            for a in chunk {
                buf.extend_from_slice(&a.load(Relaxed).to_le_bytes());
            }
            self.put(buf)?;
        }
        Ok(())
    }
}

/// Write `table` (and opaque model-level `extra` bytes) to `path` atomically.
/// Rows updated concurrently with the save are captured as they are when read.
pub fn save(table: &EmbeddingTable, path: &Path, extra: &[u8]) -> Result<u64> {
    if !table.is_compact() {
        // Evicted rows are not saved: write a compacted copy of the live rows.
        return save(&table.copy()?, path, extra);
    }
    write_atomically(path, |file| write_table(table, file, extra).map(|_| ()))
}

/// Write `table` in the snapshot format to `w` (a compact table: rows
/// `0..len()`). Returns the number of bytes written.
pub fn write_table<W: Write>(table: &EmbeddingTable, w: W, extra: &[u8]) -> std::io::Result<u64> {
    if !table.is_compact() {
        let copy = table
            .copy()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        return write_table(&copy, w, extra);
    }
    write_table_rows(table, table.len(), w, extra)
}

/// `write_table` of the first `n` rows of a compact table (`n <= len()`), so
/// that a caller can announce the size (`table_bytes`) before writing while
/// other threads insert rows.
pub fn write_table_rows<W: Write>(
    table: &EmbeddingTable,
    n: usize,
    w: W,
    extra: &[u8],
) -> std::io::Result<u64> {
    if !table.is_compact() || n > table.len() {
        return Err(std::io::Error::other(
            "write_table_rows needs a compact table with at least n rows",
        ));
    }
    let mut w = CrcWriter {
        inner: w,
        crc: crc32fast::Hasher::new(),
    };
    let mut buf = Vec::with_capacity(CHUNK * 8);
    w.put(&header(table, n))?;
    w.put(&(extra.len() as u64).to_le_bytes())?;
    w.put(extra)?;
    w.put_u32s(&table.weights_region()[..n * table.dim()], &mut buf)?;
    w.put_u32s(&table.state_region()[..n * table.state_width()], &mut buf)?;
    w.put_u64s(&table.meta_region()[..n * meta::WORDS], &mut buf)?;
    let crc = w.crc.clone().finalize();
    w.inner.write_all(&crc.to_le_bytes())?;
    Ok(table_bytes(table, n, extra.len()) as u64)
}

/// Size in bytes of `table`'s snapshot with `rows` rows and `extra_len`
/// extra bytes.
pub fn table_bytes(table: &EmbeddingTable, rows: usize, extra_len: usize) -> usize {
    8 + 8
        + HEADER_LEN as usize
        + 8
        + extra_len
        + rows * ((table.dim() + table.state_width()) * 4 + 8 * meta::WORDS)
        + 4
}

/// Replace `path` with the bytes `write` produces, atomically: write
/// `.name.tmp-<pid>` beside it, fsync, rename over `path`, fsync the
/// directory. On any error the temporary file is removed and `path` is left
/// as it was. Returns the file size.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        kind: std::io::ErrorKind::InvalidInput,
        message: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<u64> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(size)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// Little-endian fields of a header held in memory.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                crate::error::corrupt(format!(
                    "file is truncated: {what} needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Read little-endian words from `file` straight into a region of a table
/// that `load` has just created and not yet shared, feeding the checksum.
fn read_into<T, R: Read>(
    file: &mut R,
    crc: &mut crc32fast::Hasher,
    dst: &[T],
    what: &str,
    name: &str,
) -> Result<()> {
    let bytes = std::mem::size_of_val(dst);
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(8 << 20);
        // SAFETY: `dst` (atomics: `UnsafeCell`s of plain integers) belongs to
        // a table created by `load` and not yet visible to any other thread, so
        // nothing else accesses it while this byte view lives; on the
        // little-endian targets embcore supports, the file's bytes are the
        // words' in-memory bytes; `done + n <= bytes` stays inside `dst`.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut((dst.as_ptr() as *mut u8).add(done), n) };
        file.read_exact(chunk)
            .map_err(|e| crate::error::corrupt(format!("{name}: reading {what}: {e}")))?;
        crc.update(chunk);
        done += n;
    }
    Ok(())
}

#[cfg(not(target_endian = "little"))]
compile_error!("embcore snapshots are implemented for little-endian targets only");

/// Read a snapshot written by `save`: (table, extra bytes). `capacity`
/// overrides the saved capacity when given. Sizes are checked against the
/// file length before anything is allocated, sections are read straight into
/// the new table, and the checksum is verified before the table is returned.
pub fn load(path: &Path, capacity: Option<usize>) -> Result<(EmbeddingTable, Vec<u8>)> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, &mut file);
    read_table(
        &mut r,
        file_len,
        capacity,
        None,
        &path.display().to_string(),
    )
}

/// Read one table in the snapshot format from `file`, which holds exactly
/// `file_len` bytes of it from its current position (`name` labels errors),
/// into a table with `lifecycle` when given.
/// Sizes are checked against `file_len` before anything is allocated.
pub fn read_table<R: Read>(
    file: &mut R,
    file_len: u64,
    capacity: Option<usize>,
    lifecycle: Option<crate::storage::lifecycle::Lifecycle>,
    name: &str,
) -> Result<(EmbeddingTable, Vec<u8>)> {
    let bad = |m: String| crate::error::corrupt(format!("{name}: {m}"));
    let read_err = |e: std::io::Error| bad(format!("read failed: {e}"));
    let prefix = 8 + 8 + HEADER_LEN as usize + 8;
    let mut head = vec![0u8; prefix.min(file_len as usize)];
    file.read_exact(&mut head).map_err(read_err)?;
    if head.len() < 8 || &head[..8] != MAGIC {
        return Err(bad("not an embcore snapshot (bad magic bytes)".into()));
    }
    if (file_len as usize) < prefix + 4 {
        return Err(bad(format!("file is truncated ({file_len} bytes)")));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    let mut r = Reader {
        data: &head,
        pos: 8,
    };
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(bad(format!(
            "snapshot version {version}, this embcore reads version {VERSION}"
        )));
    }
    let hlen = r.u32("header length")?;
    if hlen != HEADER_LEN {
        return Err(bad(format!("header length {hlen}, expected {HEADER_LEN}")));
    }
    let dim = r.u32("dim")? as usize;
    let state_width = r.u32("state width")? as usize;
    let kind_code = r.take(8, "optimizer")?[0];
    let seed = r.u64("seed")?;
    let rows = r.u64("rows")?;
    let saved_capacity = r.u64("capacity")?;
    let mut f = [0f32; 6];
    for v in f.iter_mut() {
        *v = r.f32("hyper-parameters")?;
    }
    let kind = OptimizerKind::from_code(kind_code)
        .ok_or_else(|| bad(format!("unknown optimizer code {kind_code}")))?;
    let extra_len = r.u64("extra length")?;
    // Check sizes before allocating anything from header values.
    let rows_us = usize::try_from(rows).map_err(|_| bad(format!("row count {rows} too large")))?;
    let expected = (|| {
        let per_row = dim
            .checked_add(state_width)?
            .checked_mul(4)?
            .checked_add(8 * meta::WORDS)?;
        prefix
            .checked_add(usize::try_from(extra_len).ok()?)?
            .checked_add(rows_us.checked_mul(per_row)?)?
            .checked_add(4)
    })()
    .ok_or_else(|| bad("header sizes overflow".into()))?;
    if expected as u64 != file_len {
        return Err(bad(format!(
            "file is truncated or has trailing data: header says {expected} bytes, file has {file_len}"
        )));
    }
    let cfg = TableConfig {
        dim,
        capacity: capacity.unwrap_or(saved_capacity as usize).max(rows_us),
        seed,
        init_scale: f[0],
        optimizer: Optimizer {
            kind,
            learning_rate: f[1],
            l2: f[2],
            max_norm: f[3],
            eps: f[4],
            initial_accumulator: f[5],
        },
    };
    cfg.validate()
        .map_err(|e| bad(format!("invalid header: {e}")))?;
    if kind.state_width(dim) != state_width {
        return Err(bad(format!(
            "state width {state_width} does not match optimizer {}",
            kind.name()
        )));
    }
    let mut extra = vec![0u8; extra_len as usize];
    file.read_exact(&mut extra).map_err(read_err)?;
    crc.update(&extra);
    let table = match lifecycle {
        Some(lc) => EmbeddingTable::with_lifecycle(cfg, lc)?,
        None => EmbeddingTable::new(cfg)?,
    };
    let io = std::cell::RefCell::new((file, crc));
    table.bulk_load(
        rows_us,
        |dst| {
            let (f, c) = &mut *io.borrow_mut();
            read_into(&mut **f, c, dst, "weights", name)
        },
        |dst| {
            let (f, c) = &mut *io.borrow_mut();
            read_into(&mut **f, c, dst, "optimizer state", name)
        },
        |dst| {
            let (f, c) = &mut *io.borrow_mut();
            read_into(&mut **f, c, dst, "metadata", name)
        },
        || {
            let (f, c) = &mut *io.borrow_mut();
            let mut stored = [0u8; 4];
            f.read_exact(&mut stored).map_err(read_err)?;
            let stored = u32::from_le_bytes(stored);
            let actual = c.clone().finalize();
            if actual != stored {
                return Err(bad(format!(
                    "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
                )));
            }
            Ok(())
        },
    )?;
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
}
