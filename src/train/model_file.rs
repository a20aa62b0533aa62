//! Model files: a whole model (MF, FFM or FM) in one `io` container,
//! written atomically, every section covered by a checksum.
//!
//! Sections of an `EMBCMODL` container (version 2; little-endian fields):
//! ```text
//! header: kind u8 (0 MF, 1 FFM, 2 FM), loss u8 (0 logistic, 1 squared),
//!         bias u8 (0 or 1), dim u32 (FFM: per block), n_tables u32,
//!         global_bias f32, global_acc f32, events_seen u64,
//!         n_tables × (name_len u32, name UTF-8)   (MF: "user", "item")
//! n_tables × the five sections of a table snapshot (`snapshot::write_sections`)
//! ```
//! Loading checks every length against the file size before allocating,
//! verifies every checksum and the consistency of the tables (same
//! optimizer, row widths that match the kind, dim and fields) before
//! returning a model. Table lifecycles are not stored (as for table
//! snapshots): pass them again when loading. Version 1 files are refused
//! with a message naming the version.

use crate::error::Result;
use crate::io::{FieldWriter, Format, Reader, Writer};
use crate::storage::snapshot;
use crate::storage::table::{EmbeddingTable, TableConfig};
use crate::train::loss::Loss;
use crate::train::mf::MfConfig;
use crate::train::model::{FieldConfig, FieldModel, Interaction, Kind};
use std::path::Path;
use std::sync::Arc;

pub const VERSION: u32 = 2;
pub const FORMAT: Format = Format {
    magic: *b"EMBCMODL",
    version: VERSION,
    what: "embcore model file",
    mistaken_for: &[(
        b"EMBCSNAP",
        "it is a table snapshot: use EmbeddingTable.load",
    )],
};
/// Most tables a model file may hold.
const MAX_TABLES: usize = 4096;

/// The kind byte of a model file.
fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::MatrixFactorization => 0,
        Kind::FieldAware => 1,
        Kind::Plain => 2,
    }
}

fn kind_from_code(c: u8) -> Option<Kind> {
    [Kind::MatrixFactorization, Kind::FieldAware, Kind::Plain]
        .into_iter()
        .find(|&k| kind_code(k) == c)
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
    let mut b = FieldWriter::default();
    b.u8(kind_code(h.kind));
    b.u8(loss_code(h.loss));
    b.u8(u8::from(h.bias));
    b.u32(h.dim as u32);
    b.u32(h.names.len() as u32);
    b.f32(h.global_bias);
    b.f32(h.global_acc);
    b.u64(h.events_seen);
    for n in &h.names {
        b.str(n);
    }
    b.0
}

/// Write a model (its header and tables, in order) to `path` atomically.
pub fn save(path: &Path, header: &ModelHeader, tables: &[&EmbeddingTable]) -> Result<u64> {
    if tables.len() != header.names.len() || tables.len() > MAX_TABLES {
        return Err(crate::error::invalid(format!(
            "one table per name, at most {MAX_TABLES}: {} tables, {} names",
            tables.len(),
            header.names.len()
        )));
    }
    // Every table pinned before its compactness check (see
    // `snapshot::save`); compacted copies of tables with evicted rows.
    let pins: Vec<_> = tables.iter().map(|t| t.pin()).collect();
    let copies: Vec<Option<EmbeddingTable>> = tables
        .iter()
        .map(|t| {
            (t.lifecycle().is_some() || !t.is_compact())
                .then(|| t.copy())
                .transpose()
        })
        .collect::<Result<_>>()?;
    let copy_pins: Vec<_> = copies.iter().flatten().map(|c| c.pin()).collect();
    let tables: Vec<&EmbeddingTable> = tables
        .iter()
        .zip(&copies)
        .map(|(t, c)| c.as_ref().unwrap_or(t))
        .collect();
    let head = encode(header);
    let sections = 1 + snapshot::SECTIONS * tables.len() as u32;
    crate::io::file::save(path, |file| {
        let mut w = Writer::new(file, &FORMAT, sections)?;
        w.section(&head)?;
        let mut copy_pin = copy_pins.iter();
        for ((t, pin), copy) in tables.iter().zip(&pins).zip(&copies) {
            // Rows inserted during the save are not saved.
            let pin = if copy.is_some() {
                copy_pin.next().expect("one pin per copy")
            } else {
                pin
            };
            snapshot::write_sections(&mut w, t, t.len(), &[], pin)?;
        }
        w.finish().map(|_| ())
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
    let (file, len) = crate::io::file::open(path)?;
    let file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut r = Reader::open(file, len, &name, &FORMAT)?;
    let head = r.section("header")?;
    let mut c = head.fields();
    let kind_at = c.offset();
    let kind = c.u8("kind")?;
    let kind = kind_from_code(kind)
        .ok_or_else(|| c.error_at(kind_at, "kind", format!("unknown code {kind}")))?;
    let loss_at = c.offset();
    let loss = match c.u8("loss")? {
        0 => Loss::Logistic,
        1 => Loss::Squared,
        x => return Err(c.error_at(loss_at, "loss", format!("unknown code {x}"))),
    };
    let bias = c.flag("bias")?;
    let dim = c.u32("dim")? as usize;
    let count_at = c.offset();
    let n_tables = c.u32("table count")? as usize;
    let global_bias = c.f32("global bias")?;
    let global_acc = c.f32("global accumulator")?;
    let events_seen = c.u64("event count")?;
    let sections = 1 + snapshot::SECTIONS as usize * n_tables;
    if n_tables > MAX_TABLES || sections != r.sections_left() as usize + 1 {
        return Err(c.error_at(
            count_at,
            "table count",
            format!(
                "{n_tables} tables need {sections} sections, the file has {} (at most {MAX_TABLES} tables)",
                r.sections_left() + 1
            ),
        ));
    }
    let mut names = Vec::with_capacity(n_tables);
    for _ in 0..n_tables {
        names.push(c.str("a field name")?);
    }
    c.finish()?;
    let header = ModelHeader {
        kind,
        loss,
        bias,
        dim,
        global_bias,
        global_acc,
        events_seen,
        names,
    };
    let mut tables = Vec::with_capacity(n_tables);
    for field in &header.names {
        let (t, _) = snapshot::read_sections(
            &mut r,
            capacity,
            lifecycles(field),
            &format!("table '{field}': "),
        )?;
        tables.push(t);
    }
    r.finish()?;
    check_tables(&header, &tables).map_err(|m| head.fields().error_at(head.offset, "tables", m))?;
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
    use crate::error::Error;
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
            scores: false,
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
