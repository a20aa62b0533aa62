//! Matrix factorisation: the two-field case of the field engine.
//!
//! A two-field field-aware model keeps one block per row (the block against
//! the other field), so its rows are exactly MF's user and item vectors and
//! its score is ⟨user, item⟩ + global + user bias + item bias. MF therefore
//! has no engine of its own: `new` builds a `FieldModel` over fields
//! ("user", "item") with MF's table seeds, and everything else (training,
//! scoring, files, monitoring) is the field model's.

use crate::error::Result;
use crate::storage::lifecycle::Lifecycle;
use crate::storage::table::TableConfig;
use crate::train::loss::Loss;
use crate::train::model::{FieldConfig, FieldModel, Interaction, Observed};

/// Everything that defines a matrix factorisation apart from its contents.
#[derive(Clone, Copy, Debug)]
pub struct MfConfig {
    pub table: TableConfig,
    pub loss: Loss,
    pub bias: bool,
}

/// MF's fields, in column order.
pub const FIELDS: [&str; 2] = ["user", "item"];
/// The argument names of MF's id columns (`train(users, items, ...)`).
pub const COLUMN_NAMES: [&str; 2] = ["users", "items"];
/// What MF's observer sees: the item row (its block against the user field).
pub const OBSERVED: Observed = Observed {
    field: 1,
    against: Some(0),
};

impl MfConfig {
    /// Logistic loss with biases: the default model over `table`.
    pub fn logistic(table: TableConfig) -> Self {
        MfConfig {
            table,
            loss: Loss::Logistic,
            bias: true,
        }
    }

    /// The field configuration of this MF.
    pub fn field_config(&self) -> FieldConfig {
        FieldConfig {
            fields: FIELDS.iter().map(|f| f.to_string()).collect(),
            interaction: Interaction::FieldAware,
            table: self.table,
            loss: self.loss,
            bias: self.bias,
        }
    }
}

/// The item table's seed of an MF seeded `seed` (the user table has `seed`).
pub fn item_seed(seed: u64) -> u64 {
    crate::kernels::rng::mix64(seed ^ 0x6974_656d)
}

/// A matrix factorisation whose tables have the given lifecycles (None:
/// keep every row).
pub fn new(
    cfg: MfConfig,
    users: Option<Lifecycle>,
    items: Option<Lifecycle>,
) -> Result<FieldModel> {
    let seed = cfg.table.seed;
    FieldModel::with_seeds(
        cfg.field_config(),
        vec![users, items],
        vec![seed, item_seed(seed)],
    )
}

/// Whether `m` is shaped as an MF (two fields named user and item,
/// field-aware).
pub fn is_mf(m: &FieldModel) -> bool {
    m.cfg.interaction == Interaction::FieldAware && m.cfg.fields == FIELDS
}

/// `COLUMN_NAMES` as owned strings, for `FieldModel::train` and `score`.
pub fn column_names() -> Vec<String> {
    COLUMN_NAMES.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::optim::{Optimizer, OptimizerKind};
    use crate::train::batch::Events;
    use crate::train::driver::TrainOptions;
    use crate::train::observer::NoObserver;

    pub(crate) fn model(kind: OptimizerKind) -> FieldModel {
        let mut t = TableConfig::new(4);
        t.capacity = 1000;
        t.optimizer = Optimizer {
            kind,
            learning_rate: 0.1,
            ..Default::default()
        };
        new(MfConfig::logistic(t), None, None).unwrap()
    }

    fn train(m: &FieldModel, u: &[u64], i: &[u64], y: &[f32]) -> Result<f64> {
        let cols = [u, i];
        let events = Events {
            columns: &cols,
            labels: y,
            weights: None,
            timestamps: None,
        };
        let opts = TrainOptions {
            threads: 1,
            count_interactions: true,
            scores: false,
            observed: OBSERVED,
        };
        Ok(m.train(&events, &column_names(), opts, &NoObserver)?
            .mean_loss)
    }

    #[test]
    fn learns_a_separable_pattern() {
        let m = model(OptimizerKind::Adagrad);
        let users: Vec<u64> = (0..2000).map(|k| k % 10).collect();
        let items: Vec<u64> = (0..2000).map(|k| (k / 10) % 10).collect();
        let labels: Vec<f32> = users
            .iter()
            .zip(&items)
            .map(|(u, i)| ((u + i) % 2) as f32)
            .collect();
        let mut last = f64::INFINITY;
        for _ in 0..20 {
            last = train(&m, &users, &items, &labels).unwrap();
        }
        assert!(last < 0.3, "loss {last}");
    }

    #[test]
    fn validation_changes_nothing() {
        let m = model(OptimizerKind::Sgd);
        assert!(train(&m, &[1, 2], &[3], &[1.0, 0.0]).is_err());
        assert!(train(&m, &[1], &[3], &[2.0]).is_err());
        assert_eq!(m.tables[0].len() + m.tables[1].len(), 0);
        assert_eq!(m.events_seen(), 0);
    }

    #[test]
    fn a_capacity_failure_changes_nothing() {
        let mut t = TableConfig::new(4);
        t.capacity = 4;
        let m = new(MfConfig::logistic(t), None, None).unwrap();
        train(&m, &[1, 2, 3], &[4, 5, 6], &[1.0; 3]).unwrap();
        let (v0, v1) = (m.tables[0].version(), m.tables[1].version());
        // Room for the new user, not for the new items: nothing may change.
        let err = train(&m, &[8, 1, 2], &[10, 11, 12], &[1.0; 3]).unwrap_err();
        assert!(err.to_string().contains("the item table needs 3"), "{err}");
        assert_eq!((m.tables[0].len(), m.tables[1].len()), (3, 3));
        assert_eq!((m.tables[0].version(), m.tables[1].version()), (v0, v1));
        assert_eq!(m.events_seen(), 3);
    }
}
