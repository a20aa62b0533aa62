//! Model files: a whole model (MF, FFM or FM) in one file, written
//! atomically, every byte covered by a checksum.
//!
//! Layout (little-endian):
//! ```text
//! magic "EMBCMODL" 8 bytes | version u32 | header_len u32
//! header: kind u8 (0 MF, 1 FFM, 2 FM), loss u8 (0 logistic, 1 squared),
//!         bias u8, 1 pad byte, dim u32 (FFM: per block), n_tables u32,
//!         global_bias f32, global_acc f32, events_seen u64,
//!         n_tables × (name_len u32, name UTF-8)   (MF: "user", "item")
//! header crc32 u32
//! n_tables × (table_len u64, one table in the `snapshot` format, which
//!             carries its own header, sections and crc32)
//! ```
//! Saving goes through `snapshot::write_atomically` (temp file, fsync,
//! rename, directory fsync): a crash leaves the previous file whole. Loading
//! checks every length against the file size before allocating, verifies
//! every checksum and the consistency of the tables (same optimizer, row
//! widths that match the kind, dim and fields) before returning a model.
//! Table lifecycles are not stored (as for table snapshots): pass them again
//! when loading.

use crate::error::{Error, Result};
use crate::storage::snapshot;
use crate::storage::table::{EmbeddingTable, TableConfig};
use crate::train::loss::Loss;
use crate::train::mf::MfConfig;
use crate::train::model::{FieldConfig, FieldModel, Interaction};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"EMBCMODL";
pub const VERSION: u32 = 1;

/// Which model a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MatrixFactorization,
    FieldAware,
    Plain,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::MatrixFactorization => 0,
            Kind::FieldAware => 1,
            Kind::Plain => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        [Kind::MatrixFactorization, Kind::FieldAware, Kind::Plain]
            .into_iter()
            .find(|k| k.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::MatrixFactorization => "MatrixFactorization",
            Kind::FieldAware => "FieldAwareFM",
            Kind::Plain => "FactorizationMachine",
        }
    }
}

/// Everything a model file holds besides the tables.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelHeader {
    pub kind: Kind,
    pub loss: Loss,
    pub bias: bool,
    pub dim: usize,
    pub global_bias: f32,
    pub global_acc: f32,
    pub events_seen: u64,
    pub names: Vec<String>,
}

fn loss_code(l: Loss) -> u8 {
    match l {
        Loss::Logistic => 0,
        Loss::Squared => 1,
    }
}

fn encode(h: &ModelHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[h.kind.code(), loss_code(h.loss), u8::from(h.bias), 0]);
    b.extend_from_slice(&(h.dim as u32).to_le_bytes());
    b.extend_from_slice(&(h.names.len() as u32).to_le_bytes());
    b.extend_from_slice(&h.global_bias.to_le_bytes());
    b.extend_from_slice(&h.global_acc.to_le_bytes());
    b.extend_from_slice(&h.events_seen.to_le_bytes());
    for n in &h.names {
        b.extend_from_slice(&(n.len() as u32).to_le_bytes());
        b.extend_from_slice(n.as_bytes());
    }
    b
}

/// Write a model (its header and tables, in order) to `path` atomically.
pub fn save(path: &Path, header: &ModelHeader, tables: &[&EmbeddingTable]) -> Result<u64> {
    if tables.len() != header.names.len() {
        return Err(crate::error::invalid("one table per name"));
    }
    // Compacted copies of tables with evicted rows, so sizes are known up front.
    let copies: Vec<Option<EmbeddingTable>> = tables
        .iter()
        .map(|t| (!t.is_compact()).then(|| t.copy()).transpose())
        .collect::<Result<_>>()?;
    let tables: Vec<&EmbeddingTable> = tables
        .iter()
        .zip(&copies)
        .map(|(t, c)| c.as_ref().unwrap_or(t))
        .collect();
    let head = encode(header);
    snapshot::write_atomically(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(head.len() as u32).to_le_bytes())?;
        w.write_all(&head)?;
        w.write_all(&crc32fast::hash(&head).to_le_bytes())?;
        for t in &tables {
            // The table's length first; rows are not inserted concurrently
            // with a save of a compact table's row count taken here.
            let n = t.len();
            let len = snapshot::table_bytes(t, n, 0) as u64;
            w.write_all(&len.to_le_bytes())?;
            let written = snapshot::write_table_rows(t, n, &mut *w, &[])?;
            if written != len {
                return Err(std::io::Error::other("table size changed during the save"));
            }
        }
        Ok(())
    })
}

/// Read a model file: its header and tables. `capacity` overrides the saved
/// capacity of every table; `lifecycles(field)` gives a table its lifecycle
/// (lifecycles are not stored in the file).
pub fn load(
    path: &Path,
    capacity: Option<usize>,
    lifecycles: &dyn Fn(&str) -> Option<crate::storage::lifecycle::Lifecycle>,
) -> Result<(ModelHeader, Vec<EmbeddingTable>)> {
    let name = path.display().to_string();
    let bad = |m: String| crate::error::corrupt(format!("{name}: {m}"));
    let io = |e: std::io::Error| crate::error::io(path, &e);
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut fixed = [0u8; 16];
    if file_len < 16 {
        return Err(bad(format!("not an embcore model file ({file_len} bytes)")));
    }
    r.read_exact(&mut fixed).map_err(io)?;
    if &fixed[..8] != MAGIC {
        let hint = if &fixed[..8] == b"EMBCSNAP" {
            " (it is a table snapshot: use EmbeddingTable.load)"
        } else {
            ""
        };
        return Err(bad(format!("not an embcore model file{hint}")));
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4"));
    if version != VERSION {
        return Err(bad(format!(
            "model file version {version}, this embcore reads version {VERSION}"
        )));
    }
    let head_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4")) as u64;
    if 16 + head_len + 4 > file_len {
        return Err(bad(format!(
            "file is truncated: the header needs {head_len} bytes, the file has {file_len}"
        )));
    }
    let mut head = vec![0u8; head_len as usize];
    r.read_exact(&mut head).map_err(io)?;
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc).map_err(io)?;
    if crc32fast::hash(&head) != u32::from_le_bytes(crc) {
        return Err(bad("header checksum mismatch".into()));
    }
    // Errors inside the header name the file.
    let named = |e: Error| match e {
        Error::Corrupt { what: m, .. } => bad(format!("header: {m}")),
        other => other,
    };
    let mut c = snapshot::Reader {
        data: &head,
        pos: 0,
    };
    let codes = c.take(4, "kind").map_err(named)?.to_vec();
    let kind =
        Kind::from_code(codes[0]).ok_or_else(|| bad(format!("unknown kind {}", codes[0])))?;
    let loss = match codes[1] {
        0 => Loss::Logistic,
        1 => Loss::Squared,
        x => return Err(bad(format!("unknown loss code {x}"))),
    };
    let dim = c.u32("dim").map_err(named)? as usize;
    let n_tables = c.u32("table count").map_err(named)? as usize;
    let global_bias = c.f32("global bias").map_err(named)?;
    let global_acc = c.f32("global accumulator").map_err(named)?;
    let events_seen = c.u64("event count").map_err(named)?;
    if n_tables > 4096 {
        return Err(bad(format!("implausible table count {n_tables}")));
    }
    let mut names = Vec::with_capacity(n_tables);
    for _ in 0..n_tables {
        let len = c.u32("name length").map_err(named)? as usize;
        let bytes = c.take(len, "a field name").map_err(named)?;
        names.push(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| bad("a field name is not UTF-8".into()))?,
        );
    }
    let header = ModelHeader {
        kind,
        loss,
        bias: codes[2] != 0,
        dim,
        global_bias,
        global_acc,
        events_seen,
        names,
    };
    let mut offset = 16 + head_len + 4;
    let mut tables = Vec::with_capacity(n_tables);
    for field in &header.names {
        let mut len = [0u8; 8];
        if offset + 8 > file_len {
            return Err(bad(format!("file is truncated before the '{field}' table")));
        }
        r.read_exact(&mut len).map_err(io)?;
        let len = u64::from_le_bytes(len);
        offset += 8;
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "file is truncated: the '{field}' table needs {len} bytes"
            )));
        }
        let (t, _) = snapshot::read_table(
            &mut (&mut r).take(len),
            len,
            capacity,
            lifecycles(field),
            &format!("{name} (table '{field}')"),
        )?;
        offset += len;
        tables.push(t);
    }
    if offset != file_len {
        return Err(bad(format!(
            "{} bytes of trailing data after the last table",
            file_len - offset
        )));
    }
    check_tables(&header, &tables).map_err(bad)?;
    Ok((header, tables))
}

/// The tables agree with each other and with the header.
fn check_tables(h: &ModelHeader, tables: &[EmbeddingTable]) -> std::result::Result<(), String> {
    let first = tables.first().ok_or("the file holds no table")?;
    let row_dim = match h.kind {
        Kind::MatrixFactorization | Kind::Plain => h.dim,
        Kind::FieldAware => h.dim * (h.names.len().max(2) - 1),
    };
    if h.kind == Kind::MatrixFactorization && h.names != ["user", "item"] {
        return Err(format!("an MF file holds tables {:?}", h.names));
    }
    for (t, f) in tables.iter().zip(&h.names) {
        if t.dim() != row_dim {
            return Err(format!(
                "table '{f}' has rows of {} floats, expected {row_dim}",
                t.dim()
            ));
        }
        if t.optimizer() != first.optimizer() {
            return Err(format!("table '{f}' has a different optimizer"));
        }
    }
    Ok(())
}

/// The table configuration a model is built with, from its first table
/// (whose seed is the model's seed) and the model's vector width.
fn model_table_config(first: &EmbeddingTable, dim: usize) -> TableConfig {
    TableConfig {
        dim,
        ..*first.config()
    }
}

/// Save a model built by `mf::new` (stored as kind MatrixFactorization).
pub fn save_mf(m: &FieldModel, path: &Path) -> Result<u64> {
    save_model(m, Kind::MatrixFactorization, path)
}

pub fn load_mf(
    path: &Path,
    capacity: Option<usize>,
    users: Option<crate::storage::lifecycle::Lifecycle>,
    items: Option<crate::storage::lifecycle::Lifecycle>,
) -> Result<FieldModel> {
    let (h, tables) = load(path, capacity, &|f| if f == "user" { users } else { items })?;
    if h.kind != Kind::MatrixFactorization {
        return Err(crate::error::invalid(format!(
            "{} holds a {}, not a MatrixFactorization; load it with {}.load",
            path.display(),
            h.kind.name(),
            h.kind.name()
        )));
    }
    let cfg = MfConfig {
        table: model_table_config(&tables[0], h.dim),
        loss: h.loss,
        bias: h.bias,
    };
    Ok(FieldModel::from_parts(
        cfg.field_config(),
        tables.into_iter().map(Arc::new).collect(),
        (h.global_bias, h.global_acc),
        h.events_seen,
    ))
}

pub fn save_field(m: &FieldModel, path: &Path) -> Result<u64> {
    let kind = match m.cfg.interaction {
        Interaction::FieldAware => Kind::FieldAware,
        Interaction::Plain => Kind::Plain,
    };
    save_model(m, kind, path)
}

fn save_model(m: &FieldModel, kind: Kind, path: &Path) -> Result<u64> {
    let (global_bias, global_acc) = m.global_state();
    let h = ModelHeader {
        kind,
        loss: m.cfg.loss,
        bias: m.cfg.bias,
        dim: m.cfg.dim(),
        global_bias,
        global_acc,
        events_seen: m.events_seen(),
        names: m.cfg.fields.clone(),
    };
    let tables: Vec<&EmbeddingTable> = m.tables.iter().map(|t| &**t).collect();
    save(path, &h, &tables)
}

pub fn load_field(
    path: &Path,
    capacity: Option<usize>,
    lifecycles: &dyn Fn(&str) -> Option<crate::storage::lifecycle::Lifecycle>,
) -> Result<FieldModel> {
    let (h, tables) = load(path, capacity, lifecycles)?;
    let interaction = match h.kind {
        Kind::FieldAware => Interaction::FieldAware,
        Kind::Plain => Interaction::Plain,
        Kind::MatrixFactorization => {
            return Err(crate::error::invalid(format!(
                "{} holds a MatrixFactorization; load it with MatrixFactorization.load",
                path.display()
            )))
        }
    };
    let cfg = FieldConfig {
        fields: h.names.clone(),
        interaction,
        table: model_table_config(&tables[0], h.dim),
        loss: h.loss,
        bias: h.bias,
    };
    cfg.validate().map_err(|e| {
        crate::error::corrupt(format!("{}: invalid model header: {e}", path.display()))
    })?;
    Ok(FieldModel::from_parts(
        cfg,
        tables.into_iter().map(Arc::new).collect(),
        (h.global_bias, h.global_acc),
        h.events_seen,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batch::Events;
    use crate::train::driver::TrainOptions;
    use crate::train::model::Observed;
    use crate::train::observer::NoObserver;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("embcore-model-io-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn field_model_round_trip_and_corruption() {
        let mut t = TableConfig::new(3);
        t.capacity = 100;
        let m = FieldModel::new(FieldConfig {
            fields: vec!["a".into(), "b".into(), "c".into()],
            interaction: Interaction::FieldAware,
            table: t,
            loss: Loss::Logistic,
            bias: true,
        })
        .unwrap();
        let cols: Vec<Vec<u64>> = (0..3)
            .map(|f| (0..20).map(|k| k % (5 + f)).collect())
            .collect();
        let refs: Vec<&[u64]> = cols.iter().map(Vec::as_slice).collect();
        let y: Vec<f32> = (0..20).map(|k| (k % 2) as f32).collect();
        let b = Events {
            columns: &refs,
            labels: &y,
            weights: None,
            timestamps: None,
        };
        let opts = TrainOptions {
            threads: 1,
            count_interactions: true,
            observed: Observed {
                field: 1,
                against: None,
            },
        };
        m.train(&b, &m.cfg.fields, opts, &NoObserver).unwrap();
        let p = dir().join("m.embm");
        save_field(&m, &p).unwrap();
        let l = load_field(&p, None, &|_| None).unwrap();
        assert_eq!(l.cfg, m.cfg);
        assert_eq!(l.global_state(), m.global_state());
        assert_eq!(l.events_seen(), m.events_seen());
        let (mut s1, mut s2) = (vec![0.0; 20], vec![0.0; 20]);
        m.score(&refs, &m.cfg.fields, &mut s1).unwrap();
        l.score(&refs, &l.cfg.fields, &mut s2).unwrap();
        assert_eq!(s1, s2);
        assert!(matches!(
            load_mf(&p, None, None, None),
            Err(Error::Invalid(_))
        ));
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 10, 20, 40, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(
                matches!(load_field(&p, None, &|_| None), Err(Error::Corrupt { .. })),
                "cut {cut}"
            );
        }
        for k in [17, 30, bytes.len() / 2, bytes.len() - 3] {
            let mut flipped = bytes.clone();
            flipped[k] ^= 0x10;
            std::fs::write(&p, &flipped).unwrap();
            assert!(load_field(&p, None, &|_| None).is_err(), "flip at {k}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert!(matches!(
            load_field(&p, None, &|_| None),
            Err(Error::Corrupt { .. })
        ));
    }
}
