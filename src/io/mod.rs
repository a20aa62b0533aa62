//! The one file container of embcore: framed, versioned, checksummed. Table
//! snapshots (`EMBCSNAP`), model files (`EMBCMODL`) and monitor bytes
//! (`EMBCMONI`) are all written by one `Writer` and read by one `Reader`;
//! `file` replaces files atomically.
//!
//! Layout (little-endian):
//! ```text
//! magic 8 bytes | format version u32 | section count u32 | crc32 of those 16 bytes u32
//! section count × (payload length u64 | payload | crc32 of length and payload u32)
//! end of data: nothing may follow the last section
//! ```
//!
//! Design notes.
//! * Each section carries its own checksum, so an error names the part that
//!   is damaged ("table 'item': weights") and its byte offset, and a large
//!   section (a table's weights) is streamed in and out in chunks, straight
//!   from and into the table's memory, without a second copy.
//! * Every length is checked against the bytes that remain before anything
//!   is allocated from it: a crafted length cannot make a reader allocate
//!   more than the input's size.
//! * What is inside a section is read with `Fields`, whose little-endian
//!   readers fail with `Error::Corrupt { what, offset }` naming the field and
//!   its absolute byte offset. Checksums catch accidents, not crafted input:
//!   decoders still validate every value they read.

pub mod file;

use crate::error::{Error, Result};
use std::io::{Read, Write};

/// Bytes before the first section: magic, version, section count, crc32.
pub const PREAMBLE: u64 = 20;
/// Framing bytes around each section's payload: length and crc32.
pub const SECTION_OVERHEAD: u64 = 12;

/// What a container holds: its magic bytes, the version this embcore writes
/// and reads, and a name for messages ("embcore table snapshot").
pub struct Format {
    pub magic: [u8; 8],
    pub version: u32,
    pub what: &'static str,
    /// Magic bytes of other formats that are often passed by mistake, with
    /// the remedy to print ("it is a model file: use FieldAwareFM.load").
    pub mistaken_for: &'static [(&'static [u8; 8], &'static str)],
}

/// Size in bytes of a container whose sections have these payload lengths.
pub fn container_len(payloads: impl IntoIterator<Item = u64>) -> u64 {
    PREAMBLE
        + payloads
            .into_iter()
            .map(|n| n + SECTION_OVERHEAD)
            .sum::<u64>()
}

/// Writes a container to `W`: `begin` a section with its length, `put` its
/// bytes (in as many pieces as wanted), `end` it; or `section` for a payload
/// held in memory. `finish` checks that the announced sections were written.
pub struct Writer<W: Write> {
    inner: W,
    written: u64,
    sections_left: u32,
    open: Option<(u64, crc32fast::Hasher)>,
}

fn misuse(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

impl<W: Write> Writer<W> {
    /// Start a container of `format` holding `sections` sections.
    pub fn new(mut inner: W, format: &Format, sections: u32) -> std::io::Result<Self> {
        let mut head = [0u8; PREAMBLE as usize];
        head[..8].copy_from_slice(&format.magic);
        head[8..12].copy_from_slice(&format.version.to_le_bytes());
        head[12..16].copy_from_slice(&sections.to_le_bytes());
        let crc = crc32fast::hash(&head[..16]);
        head[16..].copy_from_slice(&crc.to_le_bytes());
        inner.write_all(&head)?;
        Ok(Writer {
            inner,
            written: PREAMBLE,
            sections_left: sections,
            open: None,
        })
    }

    /// Open a section of exactly `len` payload bytes.
    pub fn begin(&mut self, len: u64) -> std::io::Result<()> {
        if self.open.is_some() || self.sections_left == 0 {
            return Err(misuse(format!(
                "container writer: section begun with {} sections left{}",
                self.sections_left,
                if self.open.is_some() {
                    " and one still open"
                } else {
                    ""
                }
            )));
        }
        let mut crc = crc32fast::Hasher::new();
        let b = len.to_le_bytes();
        crc.update(&b);
        self.inner.write_all(&b)?;
        self.written += 8;
        self.open = Some((len, crc));
        Ok(())
    }

    /// Append payload bytes to the open section.
    pub fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.put_with(bytes, |crc| crc.update(bytes))
    }

    /// `put` of bytes whose checksum the caller computed: `hash` was fed
    /// exactly `bytes`, from `Hasher::new()` (so that another thread can
    /// checksum a buffer while this one writes the previous: the section's
    /// checksum is the same, `Hasher::combine` appends the two).
    pub fn put_hashed(&mut self, bytes: &[u8], hash: &crc32fast::Hasher) -> std::io::Result<()> {
        self.put_with(bytes, |crc| crc.combine(hash))
    }

    /// `put`'s checks and write, with `checksum` adding `bytes` to the
    /// section's checksum.
    fn put_with(
        &mut self,
        bytes: &[u8],
        checksum: impl FnOnce(&mut crc32fast::Hasher),
    ) -> std::io::Result<()> {
        let Some((left, crc)) = self.open.as_mut() else {
            return Err(misuse("container writer: put outside a section".into()));
        };
        if bytes.len() as u64 > *left {
            return Err(misuse(format!(
                "container writer: {} bytes put into a section with {left} bytes left \
                 (the data changed while it was being saved?)",
                bytes.len()
            )));
        }
        *left -= bytes.len() as u64;
        checksum(crc);
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Close the open section, which must have received all its bytes.
    pub fn end(&mut self) -> std::io::Result<()> {
        match self.open.take() {
            Some((0, crc)) => {
                self.inner.write_all(&crc.finalize().to_le_bytes())?;
                self.written += 4;
                self.sections_left -= 1;
                Ok(())
            }
            Some((left, _)) => Err(misuse(format!(
                "container writer: section closed {left} bytes short \
                 (the data changed while it was being saved?)"
            ))),
            None => Err(misuse("container writer: end outside a section".into())),
        }
    }

    /// A whole section from bytes in memory.
    pub fn section(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.begin(payload.len() as u64)?;
        self.put(payload)?;
        self.end()
    }

    /// Check that every announced section was written; returns the writer
    /// and the container's size in bytes.
    pub fn finish(self) -> std::io::Result<(W, u64)> {
        if self.open.is_some() || self.sections_left != 0 {
            return Err(misuse(format!(
                "container writer: finished with {} sections not written",
                self.sections_left
            )));
        }
        Ok((self.inner, self.written))
    }
}

/// Little-endian fields appended to a section payload held in memory.
#[derive(Default)]
pub struct FieldWriter(pub Vec<u8>);

impl FieldWriter {
    pub fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    pub fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn i32(&mut self, x: i32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn i64(&mut self, x: i64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn f32(&mut self, x: f32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn f64(&mut self, x: f64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn f32s(&mut self, x: &[f32]) {
        for v in x {
            self.f32(*v);
        }
    }
    pub fn u64s(&mut self, x: &[u64]) {
        for v in x {
            self.u64(*v);
        }
    }
    /// A u32 length, then the bytes.
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reads a container from `R`, which holds exactly `len` bytes of it.
/// Sections are read in order: `section` (whole, into memory) or
/// `begin`/`read_exact`/`end` (streamed); `finish` checks nothing is left.
pub struct Reader<R: Read> {
    inner: R,
    name: String,
    len: u64,
    pos: u64,
    version: u32,
    sections_left: u32,
    open: Option<Open>,
}

struct Open {
    what: String,
    start: u64,
    end: u64,
    crc: crc32fast::Hasher,
}

/// A `Corrupt` error: `name: what`, at byte `offset`.
pub fn corrupt_at(name: &str, what: impl std::fmt::Display, offset: u64) -> Error {
    Error::Corrupt {
        what: format!("{name}: {what}"),
        offset: Some(offset),
    }
}

impl<R: Read> Reader<R> {
    /// Read and check the preamble: magic bytes, version, section count and
    /// their checksum. `name` (a path, "monitor bytes") starts every error.
    pub fn open(mut inner: R, len: u64, name: &str, format: &Format) -> Result<Self> {
        let bad = |what: String, at: u64| corrupt_at(name, what, at);
        let mut head = [0u8; PREAMBLE as usize];
        let have = len.min(PREAMBLE) as usize;
        inner
            .read_exact(&mut head[..have])
            .map_err(|e| bad(format!("reading the preamble: {e}"), 0))?;
        if have < 8 || head[..8] != format.magic {
            let hint = format
                .mistaken_for
                .iter()
                .find(|(m, _)| have >= 8 && head[..8] == m[..])
                .map_or(String::new(), |(_, h)| format!(" ({h})"));
            return Err(bad(
                format!("not an {} (bad magic bytes){hint}", format.what),
                0,
            ));
        }
        if have < PREAMBLE as usize {
            return Err(bad(
                format!("truncated: {len} bytes, the preamble alone has {PREAMBLE}"),
                len,
            ));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != format.version {
            return Err(bad(
                format!(
                    "{} version {version} is not supported: this embcore reads version {} \
                     (load the file with the embcore that wrote it)",
                    format.what, format.version
                ),
                8,
            ));
        }
        let stored = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
        let actual = crc32fast::hash(&head[..16]);
        if stored != actual {
            return Err(bad(
                format!("preamble checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
                16,
            ));
        }
        let sections = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
        if u64::from(sections) * SECTION_OVERHEAD > len - PREAMBLE {
            return Err(bad(
                format!(
                    "truncated: {sections} sections need at least {} bytes, there are {len}",
                    PREAMBLE + u64::from(sections) * SECTION_OVERHEAD
                ),
                12,
            ));
        }
        Ok(Reader {
            inner,
            name: name.to_string(),
            len,
            pos: PREAMBLE,
            version,
            sections_left: sections,
            open: None,
        })
    }

    /// The version read from the preamble.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Sections not read yet.
    pub fn sections_left(&self) -> u32 {
        self.sections_left
    }

    /// The label of every error (a path or "monitor bytes").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Corrupt` error naming this container and `what`, at `offset`.
    pub fn error(&self, what: impl std::fmt::Display, offset: u64) -> Error {
        corrupt_at(&self.name, what, offset)
    }

    fn raw(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let at = self.pos;
        self.inner.read_exact(buf).map_err(|e| {
            corrupt_at(
                &self.name,
                format!("{what}: {} bytes cannot be read: {e}", buf.len()),
                at,
            )
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Open the next section, named `what` in errors; `expected` is its
    /// payload length when the caller knows it. Returns the payload length,
    /// which fits in what remains of the input.
    pub fn begin(&mut self, what: &str, expected: Option<u64>) -> Result<u64> {
        if self.open.is_some() {
            return Err(self.error(format!("{what}: previous section still open"), self.pos));
        }
        if self.sections_left == 0 {
            return Err(self.error(
                format!("{what}: the container has no more sections"),
                self.pos,
            ));
        }
        let start = self.pos;
        let mut b = [0u8; 8];
        self.raw(&mut b, &format!("{what}: section length"))?;
        let n = u64::from_le_bytes(b);
        let room = (self.len - self.pos).saturating_sub(4);
        if n > room {
            return Err(self.error(
                format!("{what}: section length {n} exceeds the {room} bytes that remain"),
                start,
            ));
        }
        if let Some(want) = expected.filter(|&w| w != n) {
            return Err(self.error(
                format!("{what}: section length {n}, the header implies {want}"),
                start,
            ));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b);
        self.open = Some(Open {
            what: what.to_string(),
            start,
            end: self.pos + n,
            crc,
        });
        Ok(n)
    }

    /// Bytes of the input not read yet.
    pub fn bytes_left(&self) -> u64 {
        self.len - self.pos
    }

    /// Bytes left in the open section.
    pub fn left(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.end - self.pos)
    }

    /// Fill `buf` from the open section (named `field` in errors).
    pub fn read_exact(&mut self, buf: &mut [u8], field: &str) -> Result<()> {
        let Some(o) = self.open.as_ref() else {
            return Err(self.error(format!("{field}: read outside a section"), self.pos));
        };
        if buf.len() as u64 > o.end - self.pos {
            return Err(self.error(
                format!(
                    "{}: {field} needs {} bytes, the section has {} left",
                    o.what,
                    buf.len(),
                    o.end - self.pos
                ),
                self.pos,
            ));
        }
        let what = format!("{}: {field}", o.what);
        self.raw(buf, &what)?;
        if let Some(o) = self.open.as_mut() {
            o.crc.update(buf);
        }
        Ok(())
    }

    /// Close the open section after all its bytes were read: verify its
    /// checksum.
    pub fn end(&mut self) -> Result<()> {
        let Some(o) = self.open.take() else {
            return Err(self.error("section end outside a section", self.pos));
        };
        if self.pos != o.end {
            return Err(self.error(
                format!(
                    "{}: {} bytes of the section were not understood",
                    o.what,
                    o.end - self.pos
                ),
                self.pos,
            ));
        }
        let mut b = [0u8; 4];
        self.raw(&mut b, &format!("{}: checksum", o.what))?;
        let stored = u32::from_le_bytes(b);
        let actual = o.crc.finalize();
        if stored != actual {
            return Err(self.error(
                format!(
                    "{}: checksum mismatch (stored {stored:08x}, computed {actual:08x}; \
                     truncated or corrupted)",
                    o.what
                ),
                o.start,
            ));
        }
        self.sections_left -= 1;
        Ok(())
    }

    /// The next section, whole, checksum verified: its bytes to decode with
    /// `Section::fields`.
    pub fn section(&mut self, what: &str) -> Result<Section> {
        let n = self.begin(what, None)?;
        let offset = self.pos;
        // `n` fits in the input (checked by `begin`), so this allocation is
        // bounded by the input's size.
        let mut bytes = vec![0u8; n as usize];
        self.read_exact(&mut bytes, "payload")?;
        self.end()?;
        Ok(Section {
            bytes,
            offset,
            context: format!("{}: {what}", self.name),
        })
    }

    /// Check that every section was read and nothing follows the last one.
    pub fn finish(mut self) -> Result<R> {
        if self.open.is_some() || self.sections_left != 0 {
            return Err(self.error(
                format!("{} sections were not read", self.sections_left),
                self.pos,
            ));
        }
        if self.pos != self.len {
            return Err(self.error(
                format!(
                    "{} bytes of trailing data after the last section",
                    self.len - self.pos
                ),
                self.pos,
            ));
        }
        let mut probe = [0u8; 1];
        if matches!(self.inner.read(&mut probe), Ok(n) if n > 0) {
            return Err(self.error("trailing data after the last section", self.pos));
        }
        Ok(self.inner)
    }
}

/// A section's payload in memory, checksum verified.
pub struct Section {
    pub bytes: Vec<u8>,
    /// Byte offset of the payload in the container.
    pub offset: u64,
    /// "name: section" for errors.
    pub context: String,
}

impl Section {
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            data: &self.bytes,
            pos: 0,
            base: self.offset,
            context: &self.context,
        }
    }
}

/// Little-endian field readers over a section's payload. Every failure is
/// `Error::Corrupt` naming the field, at its absolute byte offset.
pub struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    context: &'a str,
}

impl<'a> Fields<'a> {
    /// Fields over bytes that start at byte `base` of an input named `context`.
    pub fn new(data: &'a [u8], base: u64, context: &'a str) -> Self {
        Fields {
            data,
            pos: 0,
            base,
            context,
        }
    }

    /// Absolute offset of the next field.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// A `Corrupt` error about `field` at the current offset.
    pub fn error(&self, field: &str, problem: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: format!("{}: {field}: {problem}", self.context),
            offset: Some(self.offset()),
        }
    }

    /// A `Corrupt` error about `field` at an earlier offset (from `offset()`).
    pub fn error_at(&self, at: u64, field: &str, problem: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: format!("{}: {field}: {problem}", self.context),
            offset: Some(at),
        }
    }

    pub fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(
                field,
                format!("needs {n} bytes, {} remain (truncated)", self.remaining()),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        Ok(self.bytes(N, field)?.try_into().expect("N bytes"))
    }

    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.bytes(1, field)?[0])
    }
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
    pub fn i32(&mut self, field: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr(field)?))
    }
    pub fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr(field)?))
    }
    pub fn f32(&mut self, field: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.arr(field)?))
    }
    pub fn f64(&mut self, field: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.arr(field)?))
    }

    /// A bool stored as one byte, 0 or 1.
    pub fn flag(&mut self, field: &str) -> Result<bool> {
        let at = self.offset();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(self.error_at(at, field, format!("{x} is not 0 or 1"))),
        }
    }

    /// A u64 count of items of at least `item` bytes each, checked against
    /// the bytes that remain (so it can size an allocation).
    pub fn count(&mut self, field: &str, item: usize) -> Result<usize> {
        let at = self.offset();
        let n = self.u64(field)?;
        let fits = (self.remaining() / item.max(1)) as u64;
        if n > fits {
            return Err(self.error_at(
                at,
                field,
                format!(
                    "{n} items of {item} bytes do not fit in the {} bytes that remain",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    pub fn f32s(&mut self, n: usize, field: &str) -> Result<Vec<f32>> {
        let len = n
            .checked_mul(4)
            .ok_or_else(|| self.error(field, format!("{n} floats overflow")))?;
        Ok(self
            .bytes(len, field)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    pub fn u64s(&mut self, n: usize, field: &str) -> Result<Vec<u64>> {
        let len = n
            .checked_mul(8)
            .ok_or_else(|| self.error(field, format!("{n} words overflow")))?;
        Ok(self
            .bytes(len, field)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// A u32 length and that many bytes of UTF-8.
    pub fn str(&mut self, field: &str) -> Result<String> {
        let n = self.u32(field)? as usize;
        let at = self.offset();
        let b = self.bytes(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.error_at(at, field, "not UTF-8"))
    }

    /// Every byte was read.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error(
                "end",
                format!("{} bytes of trailing data in the section", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// (start, length) of each section payload of a well-framed container
/// (for tests that craft contents with valid checksums).
#[cfg(test)]
pub(crate) fn section_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let count = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
    let mut pos = PREAMBLE as usize;
    (0..count)
        .map(|_| {
            let n = u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes")) as usize;
            let span = (pos + 8, n);
            pos += 8 + n + 4;
            span
        })
        .collect()
}

/// `data` with section `index`'s payload replaced, length and checksum valid.
#[cfg(test)]
pub(crate) fn reframe(data: &[u8], index: usize, payload: &[u8]) -> Vec<u8> {
    let (start, n) = section_spans(data)[index];
    let mut out = data[..start - 8].to_vec();
    let head = (payload.len() as u64).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&data[start + n + 4..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Format = Format {
        magic: *b"EMBCTEST",
        version: 3,
        what: "embcore test container",
        mistaken_for: &[(b"EMBCOTHR", "use the other loader")],
    };

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &F, 2).unwrap();
        let mut f = FieldWriter::default();
        f.u32(7);
        f.str("hello");
        f.f64(-1.5);
        w.section(&f.0).unwrap();
        w.begin(6).unwrap();
        w.put(b"abc").unwrap();
        w.put(b"def").unwrap();
        w.end().unwrap();
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n as usize, bytes.len());
        assert_eq!(n, container_len([4 + 4 + 5 + 8, 6]));
        bytes
    }

    #[test]
    fn chunks_checksummed_elsewhere_write_the_same_bytes() {
        let payload: Vec<u8> = (0..10_000u32).map(|k| (k * 7 % 251) as u8).collect();
        for cut in [0, 1, 4096, 9_999, 10_000] {
            let (a, b) = payload.split_at(cut);
            let mut w = Writer::new(Vec::new(), &F, 1).unwrap();
            w.begin(payload.len() as u64).unwrap();
            for part in [a, b] {
                let mut h = crc32fast::Hasher::new();
                h.update(part);
                w.put_hashed(part, &h).unwrap();
            }
            w.end().unwrap();
            let mut plain = Writer::new(Vec::new(), &F, 1).unwrap();
            plain.begin(payload.len() as u64).unwrap();
            plain.put(&payload).unwrap();
            plain.end().unwrap();
            assert_eq!(w.finish().unwrap(), plain.finish().unwrap(), "cut at {cut}");
        }
        // A hash of other bytes gives another checksum.
        let mut w = Writer::new(Vec::new(), &F, 1).unwrap();
        w.begin(3).unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(b"abd");
        w.put_hashed(b"abc", &h).unwrap();
        w.end().unwrap();
        let mut plain = Writer::new(Vec::new(), &F, 1).unwrap();
        plain.begin(3).unwrap();
        plain.put(b"abc").unwrap();
        plain.end().unwrap();
        assert_ne!(w.finish().unwrap(), plain.finish().unwrap());
    }

    fn read(bytes: &[u8]) -> Result<(u32, String, f64, Vec<u8>)> {
        let mut r = Reader::open(bytes, bytes.len() as u64, "t", &F)?;
        let s = r.section("head")?;
        let mut f = s.fields();
        let (a, b, c) = (f.u32("a")?, f.str("b")?, f.f64("c")?);
        f.finish()?;
        r.begin("body", Some(6))?;
        let mut body = vec![0u8; 6];
        r.read_exact(&mut body[..2], "x")?;
        r.read_exact(&mut body[2..], "y")?;
        r.end()?;
        r.finish()?;
        Ok((a, b, c, body))
    }

    #[test]
    fn round_trip() {
        let b = sample();
        assert_eq!(
            read(&b).unwrap(),
            (7, "hello".into(), -1.5, b"abcdef".to_vec())
        );
    }

    #[test]
    fn every_damage_is_a_corrupt_error_with_an_offset() {
        let b = sample();
        for cut in 0..b.len() {
            assert!(
                matches!(
                    read(&b[..cut]),
                    Err(Error::Corrupt {
                        offset: Some(_),
                        ..
                    })
                ),
                "cut {cut}"
            );
        }
        for k in 0..b.len() {
            for bit in [1u8, 0x80] {
                let mut x = b.clone();
                x[k] ^= bit;
                assert!(
                    matches!(
                        read(&x),
                        Err(Error::Corrupt {
                            offset: Some(_),
                            ..
                        })
                    ),
                    "flip at {k}"
                );
            }
        }
        let mut longer = b.clone();
        longer.push(0);
        let e = read(&longer).unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
        let mut other = b.clone();
        other[..8].copy_from_slice(b"EMBCOTHR");
        let e = read(&other).unwrap_err().to_string();
        assert!(e.contains("use the other loader"), "{e}");
        let mut old = b.clone();
        old[8] = 1;
        let e = read(&old).unwrap_err().to_string();
        assert!(e.contains("version 1 is not supported"), "{e}");
    }

    #[test]
    fn field_errors_name_the_field_and_its_offset() {
        let b = sample();
        let mut r = Reader::open(&b[..], b.len() as u64, "t", &F).unwrap();
        let s = r.section("head").unwrap();
        let mut f = s.fields();
        f.u32("a").unwrap();
        f.bytes(9, "b").unwrap();
        let e = f.u64s(2, "words").unwrap_err();
        assert_eq!(
            e,
            Error::Corrupt {
                what: "t: head: words: needs 16 bytes, 8 remain (truncated)".into(),
                offset: Some(PREAMBLE + 8 + 13),
            }
        );
    }

    #[test]
    fn reframing_keeps_a_valid_container() {
        let b = sample();
        assert_eq!(reframe(&b, 1, b"abcdef"), b);
        let x = reframe(&b, 1, b"xyz");
        let e = read(&x).unwrap_err().to_string();
        assert!(
            e.contains("body: section length 3, the header implies 6"),
            "{e}"
        );
    }

    #[test]
    fn writer_rejects_wrong_lengths() {
        let mut w = Writer::new(Vec::new(), &F, 1).unwrap();
        w.begin(2).unwrap();
        assert!(w.put(b"abc").is_err());
        w.put(b"a").unwrap();
        assert!(w.end().is_err());
        let w = Writer::new(Vec::new(), &F, 1).unwrap();
        assert!(w.finish().is_err());
    }
}
