//! Train MF on synthetic events once, for profilers (callgrind, perf):
//! `cargo run --release --no-default-features --example profile_train -- sgd 2000000`
//! (optional third argument: threads; `MONITOR=1`: the timed pass feeds an
//! `embcore` Monitor, 1% cohort; `IDS=1000000`: ids per field, default
//! 100000, the bench's mf-1m workload draws from 1M; `ZIPF=1`: items drawn
//! Zipf(1.2)-like, heavy-tailed, as the bench's mf-1m items are, users stay
//! uniform; `REPS=k`: k timed passes, the fastest reported).

use _core::kernels::optim::{Optimizer, OptimizerKind};
use _core::monitor::{Monitor, MonitorConfig};
use _core::storage::table::TableConfig;
use _core::train::batch::Events;
use _core::train::driver::TrainOptions;
use _core::train::mf::{self, MfConfig};
use _core::train::model::FieldModel;
use _core::train::observer::NoObserver;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = OptimizerKind::parse(args.get(1).map_or("sgd", |s| s.as_str())).expect("optimizer");
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let ids: u64 = std::env::var("IDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let users: Vec<u64> = (0..n as u64)
        .map(|k| _core::kernels::rng::hash2(1, k) % ids)
        .collect();
    let zipf = std::env::var_os("ZIPF").is_some();
    let items: Vec<u64> = (0..n as u64)
        .map(|k| {
            let h = _core::kernels::rng::hash2(2, k);
            if zipf {
                // Inverse CDF of the continuous Zipf(1.2) tail: rank u^-5.
                let u = _core::kernels::rng::unit_f32(h).max(1e-12) as f64;
                (u.powf(-5.0) as u64).saturating_sub(1) % ids
            } else {
                h % ids
            }
        })
        .collect();
    let mut labels: Vec<f32> = (0..n).map(|k| (k % 3 == 0) as u8 as f32).collect();
    // `NPY=DIR`: the events of DIR/uid.npy, iid.npy (uint64) and lab.npy
    // (float32) instead, e.g. the bench's own arrays saved with numpy.
    let (users, items) = match std::env::var("NPY") {
        Ok(dir) => {
            let u: Vec<u64> = npy(&format!("{dir}/uid.npy"), u64::from_le_bytes);
            let i: Vec<u64> = npy(&format!("{dir}/iid.npy"), u64::from_le_bytes);
            labels = npy(&format!("{dir}/lab.npy"), f32::from_le_bytes);
            (u, i)
        }
        Err(_) => (users, items),
    };
    let n = labels.len();
    let mut t = TableConfig::new(32);
    t.capacity = std::env::var("CAP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    t.optimizer = Optimizer {
        kind,
        ..Default::default()
    };
    let m = mf::new(MfConfig::logistic(t), None, None).expect("model");
    let columns: [&[u64]; 2] = [&users, &items];
    let b = Events {
        columns: &columns,
        labels: &labels,
        weights: None,
        timestamps: None,
    };
    let names = mf::column_names();
    let opts = TrainOptions {
        threads,
        count_interactions: true,
        observed: mf::OBSERVED,
        scores: false,
    };
    m.train(&b, &names, opts, &NoObserver).expect("warm-up");
    let monitor = std::env::var_os("MONITOR")
        .is_some()
        .then(|| Monitor::new(MonitorConfig::default()).expect("monitor"));
    // `REPS=k`: k timed passes (the rate of the fastest), so that a
    // sampling profiler sees mostly training rather than the warm-up's
    // row creation.
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut dt = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        timed_pass(&m, &b, &names, opts, monitor.as_ref());
        dt = dt.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{} events/s (vectors: {})",
        n as f64 / dt,
        _core::kernels::simd::level()
    );
}

/// The measured pass, a function of its own so that callgrind can count it
/// alone: `valgrind --tool=callgrind --toggle-collect=profile_train::timed_pass`
/// (see benches/callgrind.sh).
#[inline(never)]
fn timed_pass(
    m: &FieldModel,
    b: &Events<'_>,
    names: &[String],
    opts: TrainOptions,
    monitor: Option<&Monitor>,
) {
    match monitor {
        Some(monitor) => m.train(b, names, opts, monitor).expect("train"),
        None => m.train(b, names, opts, &NoObserver).expect("train"),
    };
}

/// The values of a version-1 `.npy` file of `N`-byte little-endian scalars.
fn npy<T, const N: usize>(path: &str, from: fn([u8; N]) -> T) -> Vec<T> {
    let bytes = std::fs::read(path).expect("npy file");
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(N)
        .map(|c| from(c.try_into().expect("N bytes")))
        .collect()
}
