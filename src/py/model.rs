//! What every model binding shares (MF, FFM and FM are one core model):
//! model settings from a constructor's arguments, the training call with
//! its optional Monitor, scores, predictions and the statistics dict.

use super::args::{self, Params};
use super::errors::guard;
use super::monitor::PyMonitor;
use super::table::table_config;
use crate::storage::table::TableConfig;
use crate::train::batch::Events;
use crate::train::driver::TrainOptions;
use crate::train::loss::{sigmoid, Loss};
use crate::train::model::{FieldModel, Observed, TrainStats};
use crate::train::observer::NoObserver;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The settings of a model constructor besides its fields and lifecycles.
pub struct ModelSettings {
    pub table: TableConfig,
    pub loss: Loss,
    pub bias: bool,
}

/// The constructor arguments every model takes besides its own.
pub const MODEL_PARAMS: [&str; 2] = ["loss", "bias"];

impl ModelSettings {
    pub fn from_params(p: &Params<'_>, default_dim: i64) -> PyResult<Self> {
        Ok(ModelSettings {
            table: table_config(p, default_dim)?,
            loss: Loss::parse(&p.string("loss", "logistic")?)?,
            bias: p.boolean("bias", true)?,
        })
    }
}

/// The event arrays of a training call, converted before any state changes.
pub struct EventArrays<'py> {
    pub labels: args::Floats<'py>,
    pub weights: Option<args::Floats<'py>>,
    pub timestamps: Option<numpy::PyReadonlyArray1<'py, i64>>,
}

impl<'py> EventArrays<'py> {
    pub fn convert(
        labels: &Bound<'py, PyAny>,
        weights: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        Ok(EventArrays {
            labels: args::floats(labels, "labels")?,
            weights: args::opt_floats(weights, "weights")?,
            timestamps: args::opt_times(timestamps, "timestamps")?,
        })
    }
}

/// How a model is trained by one call, as the bindings received it.
pub struct TrainCall<'a, 'py> {
    pub call: &'static str,
    pub columns: &'a [&'a [u64]],
    pub names: &'a [String],
    pub arrays: &'a EventArrays<'py>,
    pub threads: usize,
    pub count_interactions: bool,
    pub observed: Observed,
    pub monitor: Option<&'a Bound<'py, PyMonitor>>,
    /// Return each event's score before its own update (`scores` in the dict).
    pub return_scores: bool,
}

/// Train `model` (GIL released, panics turned into errors); the monitor, if
/// any, must hold rows of the observed width.
pub fn train(py: Python<'_>, model: &FieldModel, c: &TrainCall<'_, '_>) -> PyResult<TrainStats> {
    let timestamps = c
        .arrays
        .timestamps
        .as_ref()
        .map(|t| t.as_slice())
        .transpose()?;
    let events = Events {
        columns: c.columns,
        labels: c.arrays.labels.as_slice(),
        weights: c.arrays.weights.as_ref().map(|w| w.as_slice()),
        timestamps,
    };
    let monitor = c.monitor.map(|m| m.get().inner.clone());
    if let Some(m) = &monitor {
        m.check_dim(model.observed_span(c.observed)?.1)?;
    }
    let options = TrainOptions {
        threads: c.threads,
        count_interactions: c.count_interactions,
        observed: c.observed,
        scores: c.return_scores,
    };
    guard(c.call, || {
        Ok(py.detach(|| match &monitor {
            Some(m) => model.train(&events, c.names, options, &**m),
            None => model.train(&events, c.names, options, &NoObserver),
        })?)
    })
}

/// The statistics every model reports; with `return_scores`, `scores`: a
/// float32 array of each event's raw score before its own update.
pub fn stats_dict<'py>(
    py: Python<'py>,
    s: &mut TrainStats,
    return_scores: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("events", s.events)?;
    d.set_item("mean_loss", s.mean_loss)?;
    if return_scores {
        d.set_item("scores", std::mem::take(&mut s.scores).into_pyarray(py))?;
    }
    Ok(d)
}

/// Raw scores of events (read-only; GIL released).
pub fn score<'py>(
    py: Python<'py>,
    model: &FieldModel,
    columns: &[&[u64]],
    names: &[String],
    call: &'static str,
) -> PyResult<Vec<f32>> {
    let mut out = vec![0.0f32; columns.first().map_or(0, |c| c.len())];
    guard(call, || {
        Ok(py.detach(|| model.score(columns, names, &mut out))?)
    })?;
    Ok(out)
}

/// Scores as an array, or probabilities sigmoid(score) for the logistic
/// loss when `probabilities`.
pub fn scores_array<'py>(
    py: Python<'py>,
    model: &FieldModel,
    mut scores: Vec<f32>,
    probabilities: bool,
) -> Bound<'py, PyArray1<f32>> {
    if probabilities && model.cfg.loss == Loss::Logistic {
        for s in &mut scores {
            *s = sigmoid(*s);
        }
    }
    scores.into_pyarray(py)
}
