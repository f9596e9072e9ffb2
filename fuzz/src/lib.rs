//! Stable-Rust fuzzing of the input formats ferrolm-core reads from untrusted sources: GGUF
//! files, tokenizer sources (tokenizer.json, tiktoken rank files, GGUF vocabularies) and the int8
//! wire format that peers send.
//!
//! No nightly, no libFuzzer: each [`targets::Target`] starts from valid inputs built in code,
//! [`mutate`] derives inputs from them (truncation, bit flips, huge length and count fields,
//! splices, huge numbers in text, sparse files), and [`run`] feeds them to the core for a fixed
//! time. A case fails when it panics, when it asks for one allocation over the cap ([`alloc`]:
//! nothing the input's size cannot justify), when it runs past the case timeout, or when the
//! target finds a broken promise (a decode that reports success with NaN data). The failing
//! input is saved and the run seed printed: `ferrolm-fuzz TARGET --seed S` replays the same
//! sequence, `ferrolm-fuzz TARGET --replay FILE` the one input.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use mutate::{mutate, Rng};
use targets::Target;

#[global_allocator]
static GLOBAL: alloc::CapAlloc = alloc::CapAlloc;

/// How one run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long to fuzz.
    pub duration: Duration,
    /// The run seed: the same seed gives the same inputs in the same order.
    pub seed: u64,
    /// Largest single allocation a case may ask for.
    pub cap_bytes: usize,
    /// Where failing inputs are written.
    pub crash_dir: PathBuf,
    /// A case running longer than this is a hang.
    pub case_timeout: Duration,
}

/// What went wrong with one input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The target.
    pub target: &'static str,
    /// The run seed.
    pub seed: u64,
    /// The index of the case in the run.
    pub case: u64,
    /// A panic message, the over-cap size, or the target's finding.
    pub what: String,
    /// Where the input was saved.
    pub saved: PathBuf,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Inputs run.
    pub cases: u64,
    /// The first failure, if any (a run stops there).
    pub failure: Option<Failure>,
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);
static CASE_STARTED_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
static HOOKS: Once = Once::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A quiet panic hook that keeps the message and location for the report, and a watchdog
/// that ends the process (input saved, seed printed) when one case hangs.
fn install_hooks(case_timeout: Duration) {
    HOOKS.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut slot) = PANIC_MESSAGE.lock() {
                slot.get_or_insert(format!("panic: {text}{at}"));
            }
        }));
        let limit = case_timeout.as_millis() as u64;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let started = CASE_STARTED_MS.load(Ordering::Relaxed);
            if started != 0 && now_ms().saturating_sub(started) > limit {
                alloc::save_current_input();
                eprintln!(
                    "ferrolm-fuzz: case {} of seed {} ran for more than {limit} ms (a hang); \
                     input saved to the crash file",
                    alloc::current_case(),
                    alloc::current_seed()
                );
                std::process::exit(3);
            }
        });
    });
}

/// The file a failing input of `target` is saved to.
pub fn crash_path(dir: &Path, target: &str, seed: u64) -> PathBuf {
    dir.join(format!("{target}-seed-{seed}.bin"))
}

/// Runs `input` once through `target` under the cap and the panic guard.
fn run_case(target: &Target, input: &[u8], seed: u64, case: u64) -> Option<String> {
    // A panic that the code under test caught itself leaves a message behind: not this case's.
    if let Ok(mut slot) = PANIC_MESSAGE.lock() {
        *slot = None;
    }
    alloc::arm(input, seed, case);
    CASE_STARTED_MS.store(now_ms(), Ordering::Relaxed);
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    CASE_STARTED_MS.store(0, Ordering::Relaxed);
    let over_cap = alloc::disarm();
    if let Some(bytes) = over_cap {
        return Some(format!(
            "one allocation of {bytes} bytes (cap {}) for a {}-byte input",
            alloc::cap(),
            input.len()
        ));
    }
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(finding)) => Some(finding),
        Err(_) => Some(
            PANIC_MESSAGE
                .lock()
                .ok()
                .and_then(|mut m| m.take())
                .unwrap_or_else(|| "panic".to_owned()),
        ),
    }
}

/// Fuzzes `target` as `config` says; stops at the first failure.
pub fn run(target: &Target, config: &Config) -> std::io::Result<Report> {
    install_hooks(config.case_timeout);
    alloc::set_cap(config.cap_bytes);
    std::fs::create_dir_all(&config.crash_dir)?;
    let path = crash_path(&config.crash_dir, target.name, config.seed);
    let crash_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    alloc::set_crash_file(&crash_file);
    let seeds = (target.seeds)();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut rng = Rng::new(config.seed);
    let start = Instant::now();
    let mut case = 0u64;
    // Every seed as it is first (they must pass), then mutants of seeds and of earlier mutants.
    let mut failure = None;
    while failure.is_none() {
        let input = if (case as usize) < seeds.len() {
            seeds[case as usize].clone()
        } else {
            if start.elapsed() >= config.duration {
                break;
            }
            let base = if rng.one_in(3) {
                &seeds[rng.below(seeds.len())]
            } else {
                &pool[rng.below(pool.len())]
            };
            let mut input = base.clone();
            mutate(&mut rng, &mut input, target.text);
            input
        };
        if let Some(what) = run_case(target, &input, config.seed, case) {
            std::fs::write(&path, &input)?;
            failure = Some(Failure {
                target: target.name,
                seed: config.seed,
                case,
                what,
                saved: path.clone(),
            });
        } else if pool.len() < 256 {
            pool.push(input);
        } else {
            let slot = rng.below(pool.len());
            pool[slot] = input;
        }
        case += 1;
    }
    drop(crash_file);
    if failure.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    Ok(Report {
        cases: case,
        failure,
    })
}

/// Runs one saved input through `target`; the failure description, if it still fails.
pub fn replay(target: &Target, input: &[u8], cap_bytes: usize) -> Option<String> {
    install_hooks(Duration::from_secs(60));
    alloc::set_cap(cap_bytes);
    run_case(target, input, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The allocator's case state is process-wide and the test harness runs tests on parallel
    /// threads: one test's `disarm` would clear the violation another test is about to read.
    static ONE_CASE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn over_cap_allocations_are_refused_and_reported() {
        let _serial = ONE_CASE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let target = targets::Target {
            name: "test-cap",
            about: "asks for 1 GiB fallibly",
            seeds: || vec![vec![1]],
            run: |_| {
                let mut v: Vec<u8> = Vec::new();
                assert!(v.try_reserve(1 << 30).is_err());
                Ok(())
            },
            text: false,
        };
        let what = replay(&target, &[1], 256 << 20).expect("a failure");
        assert!(what.contains("1073741824 bytes"), "{what}");
    }

    #[test]
    fn panics_are_caught_with_their_message() {
        let _serial = ONE_CASE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let target = targets::Target {
            name: "test-panic",
            about: "panics",
            seeds: || vec![vec![1]],
            run: |input| {
                let i = input.len() + 3;
                std::hint::black_box(input[i]);
                Ok(())
            },
            text: false,
        };
        let what = replay(&target, &[1], 256 << 20).expect("a failure");
        assert!(what.contains("index out of bounds"), "{what}");
    }
}
