//! Train a 4-field FFM (or FM) on synthetic events, for profilers
//! (callgrind, perf): fields user / item / creator / tag with
//! 1M / 1M / 100k / 1k ids, d = 8 per block, Adagrad, one warm-up pass that
//! creates the rows, then one timed pass.
//! `cargo run --release --no-default-features --example profile_ffm -- ffm 2000000`
//! (first argument `ffm` or `fm`; optional: the optimizer, timed passes).

use _core::kernels::optim::{Optimizer, OptimizerKind};
use _core::storage::table::TableConfig;
use _core::train::batch::Events;
use _core::train::driver::TrainOptions;
use _core::train::loss::Loss;
use _core::train::model::{FieldConfig, FieldModel, Interaction, Observed};
use _core::train::observer::NoObserver;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let interaction = match args.get(1).map_or("ffm", |s| s.as_str()) {
        "fm" => Interaction::Plain,
        _ => Interaction::FieldAware,
    };
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let kind =
        OptimizerKind::parse(args.get(3).map_or("adagrad", |s| s.as_str())).expect("optimizer");
    let reps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let sizes = [1_000_000u64, 1_000_000, 100_000, 1_000];
    let cols: Vec<Vec<u64>> = sizes
        .iter()
        .enumerate()
        .map(|(f, &m)| {
            (0..n as u64)
                .map(|k| _core::kernels::rng::hash2(f as u64 + 1, k) % m)
                .collect()
        })
        .collect();
    let labels: Vec<f32> = (0..n).map(|k| (k % 3 == 0) as u8 as f32).collect();
    let mut t = TableConfig::new(if interaction == Interaction::Plain {
        32
    } else {
        8
    });
    t.capacity = 1 << 24;
    t.optimizer = Optimizer {
        kind,
        ..Default::default()
    };
    let m = FieldModel::new(FieldConfig {
        fields: ["user", "item", "creator", "tag"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        interaction,
        table: t,
        loss: Loss::Logistic,
        bias: true,
    })
    .expect("model");
    let columns: Vec<&[u64]> = cols.iter().map(|c| c.as_slice()).collect();
    let b = Events {
        columns: &columns,
        labels: &labels,
        weights: None,
        timestamps: None,
    };
    let obs = Observed {
        field: 1,
        against: (interaction == Interaction::FieldAware).then_some(0),
    };
    let opts = TrainOptions {
        threads: 1,
        count_interactions: true,
        observed: obs,
        scores: false,
    };
    m.train(&b, &m.cfg.fields, opts, &NoObserver)
        .expect("warm-up");
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        timed_pass(&m, &b, opts);
        let dt = t0.elapsed().as_secs_f64();
        println!("{} events/s", n as f64 / dt);
    }
}

/// The measured pass, a function of its own so that callgrind can count it
/// alone: `valgrind --tool=callgrind --toggle-collect=profile_ffm::timed_pass`
/// (see benches/callgrind.sh).
#[inline(never)]
fn timed_pass(m: &FieldModel, b: &Events<'_>, opts: TrainOptions) {
    m.train(b, &m.cfg.fields, opts, &NoObserver).expect("train");
}
