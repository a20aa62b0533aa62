//! What defines a model apart from its contents: its fields, how they
//! interact, its tables' settings, its loss; and the FFM row layout.

use crate::error::{config, Result};
use crate::storage::table::TableConfig;

/// Most fields a model has (the per-event kernel keeps per-field state on
/// the stack).
pub const MAX_FIELDS: usize = 64;

/// How the features of one event interact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    /// FFM: Σ_{i<j} ⟨w_{i, field j}, w_{j, field i}⟩.
    FieldAware,
    /// FM: Σ_{i<j} ⟨v_i, v_j⟩.
    Plain,
}

impl Interaction {
    pub fn name(self) -> &'static str {
        match self {
            Interaction::FieldAware => "field_aware",
            Interaction::Plain => "plain",
        }
    }
}

/// Everything that defines a field model apart from its contents.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldConfig {
    pub fields: Vec<String>,
    pub interaction: Interaction,
    /// Width of one latent vector (one FFM block, or the FM vector).
    /// `table.dim` is that width; the tables get `row_dim()`.
    pub table: TableConfig,
    pub loss: crate::train::loss::Loss,
    pub bias: bool,
}

impl FieldConfig {
    pub fn dim(&self) -> usize {
        self.table.dim
    }

    /// Width of a table row: `dim` for FM, `dim × (n_fields − 1)` for FFM.
    pub fn row_dim(&self) -> usize {
        match self.interaction {
            Interaction::FieldAware => self.table.dim * (self.fields.len().max(2) - 1),
            Interaction::Plain => self.table.dim,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.fields.len() > MAX_FIELDS {
            return Err(crate::error::out_of_range(
                "fields",
                format!("{} fields", self.fields.len()),
                format!("at most {MAX_FIELDS} fields"),
            ));
        }
        if self.fields.len() < 2 {
            return Err(config(format!(
                "a factorisation machine needs at least 2 fields, got {} ({}); \
                 pass fields=['user', 'item', ...]",
                self.fields.len(),
                field_list(&self.fields)
            )));
        }
        for (k, f) in self.fields.iter().enumerate() {
            if f.is_empty() {
                return Err(config(format!("fields[{k}] is an empty name")));
            }
            if let Some(j) = self.fields[..k].iter().position(|g| g == f) {
                return Err(config(format!(
                    "field '{f}' appears twice (fields[{j}] and fields[{k}]); \
                     field names must be distinct"
                )));
            }
        }
        self.table.validate()?;
        TableConfig {
            dim: self.row_dim(),
            ..self.table
        }
        .validate()
    }

    /// Index of field `name`, or an error listing the fields.
    pub fn field_index(&self, name: &str) -> Result<usize> {
        self.fields.iter().position(|f| f == name).ok_or_else(|| {
            config(format!(
                "unknown field '{name}'; this model's fields are {}",
                field_list(&self.fields)
            ))
        })
    }
}

/// `['user', 'item']`: field names the way Python prints them, for messages.
pub fn field_list(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Position, within a row of field `own`, of the block used against field
/// `other` (FFM; `own != other`).
#[inline(always)]
pub fn block_index(own: usize, other: usize) -> usize {
    other - usize::from(other > own)
}
