//! Criterion benchmarks of the pure-Rust core (no Python): real-time MF
//! training, first-sight inserts and the row-norm scan.
//! Run with `cargo bench --no-default-features`.

use _core::kernels::optim::{Optimizer, OptimizerKind};
use _core::storage::table::{EmbeddingTable, TableConfig};
use _core::train::batch::Events;
use _core::train::driver::TrainOptions;
use _core::train::mf::{self, MfConfig};
use _core::train::model::FieldModel;
use _core::train::observer::NoObserver;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: u64 = 100_000;
const EVENTS: usize = 200_000;

fn ids(n: usize, seed: u64, modulo: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|k| _core::kernels::rng::hash2(seed, k) % modulo)
        .map(|x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect()
}

fn model(kind: OptimizerKind) -> FieldModel {
    let mut t = TableConfig::new(32);
    t.capacity = 1 << 20;
    t.optimizer = Optimizer {
        kind,
        ..Default::default()
    };
    mf::new(MfConfig::logistic(t), None, None).unwrap()
}

fn training(c: &mut Criterion) {
    let users = ids(EVENTS, 1, N);
    let items = ids(EVENTS, 2, N);
    let labels: Vec<f32> = (0..EVENTS).map(|k| (k % 3 == 0) as u8 as f32).collect();
    let columns: [&[u64]; 2] = [&users, &items];
    let names = mf::column_names();
    let batch = Events {
        columns: &columns,
        labels: &labels,
        weights: None,
        timestamps: None,
    };
    let mut g = c.benchmark_group("train");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    for (name, kind, threads) in [
        ("sgd_1t", OptimizerKind::Sgd, 1),
        ("adagrad_1t", OptimizerKind::Adagrad, 1),
        ("adagrad_2t", OptimizerKind::Adagrad, 2),
    ] {
        let m = model(kind);
        let opts = TrainOptions {
            threads,
            count_interactions: true,
            observed: mf::OBSERVED,
            scores: false,
        };
        m.train(&batch, &names, opts, &NoObserver).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| m.train(&batch, &names, opts, &NoObserver).unwrap())
        });
    }
    g.finish();
}

fn inserts(c: &mut Criterion) {
    let fresh = ids(EVENTS, 3, u64::MAX);
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.bench_function("first_sight_1t", |b| {
        b.iter(|| {
            let t = EmbeddingTable::new(TableConfig {
                capacity: 1 << 20,
                ..TableConfig::new(32)
            })
            .unwrap();
            _core::train::resolve::resolve(&t, &fresh, &|_| 0, 1, true).unwrap()
        })
    });
    g.finish();
}

fn scans(c: &mut Criterion) {
    let t = EmbeddingTable::new(TableConfig {
        capacity: 1 << 20,
        ..TableConfig::new(32)
    })
    .unwrap();
    _core::train::resolve::resolve(&t, &ids(EVENTS, 4, u64::MAX), &|_| 0, 1, true).unwrap();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes((t.len() * 32 * 4) as u64));
    g.bench_function("row_norms", |b| {
        b.iter(|| _core::storage::scan::row_norms(&t))
    });
    g.finish();
}

criterion_group!(benches, training, inserts, scans);
criterion_main!(benches);
