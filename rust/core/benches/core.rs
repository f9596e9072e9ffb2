//! Wall-clock timings of the core's heaviest paths, for before/after comparisons of a change:
//! `cargo bench -p ferrolm-core` runs them all, `cargo bench -p ferrolm-core -- sequoia` only
//! those whose name contains `sequoia`. Each line gives the median and the fastest of a few runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrolm_core::prune::splitmix64;
use ferrolm_core::speculative::{sequoia_dp, sequoia_heap, BuilderConfig, TreeBuilder};

/// Runs `work` `runs` times (after one warm-up run) and prints the median and fastest times.
fn report<T>(filter: Option<&str>, name: &str, runs: usize, mut work: impl FnMut() -> T) {
    if filter.is_some_and(|f| !name.contains(f)) {
        return;
    }
    black_box(work());
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(work());
            start.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<44} median {:>9.3} ms   fastest {:>9.3} ms   ({runs} runs)",
        ms(times[runs / 2]),
        ms(times[0])
    );
}

/// A draft model's acceptance vector: most mass on the top rank, a long thin tail.
fn acceptance(width: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..width).map(|k| 0.6 * 0.45f64.powi(k as i32)).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|x| 0.9 * x / sum).collect()
}

/// Grows one SpecExec tree to `budget` nodes, expanding the best `per_step` frontier nodes per
/// step with `width` candidates each; log-probs come from a fixed splitmix64 stream.
fn grow_tree(budget: usize, per_step: usize, width: usize) -> usize {
    let cfg = BuilderConfig {
        budget,
        max_depth: 32,
        max_width: width,
        log_decay: 0.0,
        min_logprob: f32::NEG_INFINITY,
    };
    let mut tree = TreeBuilder::new(0, cfg).expect("valid config");
    let mut draws = 0u64;
    let mut uniform = move || {
        draws += 1;
        (splitmix64(draws) >> 40) as f32 / (1u64 << 24) as f32
    };
    let tokens: Vec<i32> = (0..per_step * width).map(|i| (i % width) as i32).collect();
    let mut logprobs = vec![0f32; per_step * width];
    for _ in 0..64 {
        let frontier = tree.frontier(per_step);
        if frontier.is_empty() {
            break;
        }
        let used = frontier.len() * width;
        for lp in &mut logprobs[..used] {
            *lp = -6.0 * uniform() * uniform();
        }
        tree.expand(&frontier, &tokens[..used], &logprobs[..used], width)
            .expect("valid expansion");
    }
    tree.finalize().0.parents.len()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let filter = filter.as_deref();
    let p = acceptance(16);
    report(filter, "sequoia_dp n=1024 d=16 B=16", 7, || {
        sequoia_dp(&p, 1024, 16).expect("valid problem")
    });
    report(filter, "sequoia_dp n=4096 d=8 B=16", 3, || {
        sequoia_dp(&p, 4096, 8).expect("valid problem")
    });
    report(filter, "sequoia_heap n=65536 d=64", 7, || {
        sequoia_heap(&p, 65536, 64).expect("valid problem")
    });
    report(
        filter,
        "tree_builder budget=1024 64x32 per step",
        15,
        || grow_tree(1024, 64, 32),
    );
    report(
        filter,
        "tree_builder budget=8192 256x64 per step",
        7,
        || grow_tree(8192, 256, 64),
    );
}
