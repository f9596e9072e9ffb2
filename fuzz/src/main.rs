//! `ferrolm-fuzz`: runs the fuzz targets of ferrolm-core for a fixed time.
//!
//! ```text
//! ferrolm-fuzz [TARGET ...|all] [--seconds N] [--seed S] [--cap-mib M] [--out DIR]
//! ferrolm-fuzz TARGET --replay FILE
//! ferrolm-fuzz --list
//! ```
//! Exit status 0 when no target failed, 1 on a failure (its seed and saved input are printed),
//! 2 on a usage error, 3 on a hang; an allocation over the cap that the code under test does not
//! handle aborts the process after the input is saved.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrolm_fuzz::targets::{find, TARGETS};
use ferrolm_fuzz::{replay, run, Config};

struct Args {
    targets: Vec<&'static ferrolm_fuzz::targets::Target>,
    seconds: f64,
    seed: u64,
    cap_mib: usize,
    out: PathBuf,
    replay: Option<PathBuf>,
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("ferrolm-fuzz: {problem}");
    eprintln!(
        "usage: ferrolm-fuzz [TARGET ...|all] [--seconds N] [--seed S] [--cap-mib M] [--out DIR] \
         [--replay FILE] [--list]"
    );
    ExitCode::from(2)
}

fn parse() -> Result<Option<Args>, String> {
    let mut args = Args {
        targets: Vec::new(),
        seconds: 60.0,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        cap_mib: 256,
        out: PathBuf::from("target/fuzz-crashes"),
        replay: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--list" => {
                for t in &TARGETS {
                    println!("{:15} {}", t.name, t.about);
                }
                return Ok(None);
            }
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|_| "--seconds takes a number")?
            }
            "--seed" => args.seed = value("--seed")?.parse().map_err(|_| "--seed takes a u64")?,
            "--cap-mib" => {
                args.cap_mib = value("--cap-mib")?
                    .parse()
                    .map_err(|_| "--cap-mib takes an integer")?
            }
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--replay" => args.replay = Some(PathBuf::from(value("--replay")?)),
            "all" => args.targets.extend(TARGETS.iter()),
            name => args
                .targets
                .push(find(name).ok_or(format!("unknown target {name:?} (see --list)"))?),
        }
    }
    if args.targets.is_empty() {
        args.targets.extend(TARGETS.iter());
    }
    if !(args.seconds >= 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be a non-negative number".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(problem) => return usage(&problem),
    };
    let cap_bytes = args.cap_mib.saturating_mul(1 << 20);
    if let Some(file) = &args.replay {
        let [target] = args.targets[..] else {
            return usage("--replay takes exactly one target");
        };
        let input = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => return usage(&format!("{}: {e}", file.display())),
        };
        return match replay(target, &input, cap_bytes) {
            None => {
                println!("{}: {} bytes run cleanly", target.name, input.len());
                ExitCode::SUCCESS
            }
            Some(what) => {
                println!("{}: FAILED: {what}", target.name);
                ExitCode::FAILURE
            }
        };
    }
    let mut failed = false;
    for target in &args.targets {
        let config = Config {
            duration: Duration::from_secs_f64(args.seconds),
            seed: args.seed,
            cap_bytes,
            crash_dir: args.out.clone(),
            case_timeout: Duration::from_secs(20),
        };
        println!(
            "{}: fuzzing for {} s, seed {}, cap {} MiB",
            target.name, args.seconds, args.seed, args.cap_mib
        );
        match run(target, &config) {
            Ok(report) => match report.failure {
                None => println!("{}: {} cases, no failure", target.name, report.cases),
                Some(f) => {
                    failed = true;
                    println!(
                        "{}: FAILED at case {} of seed {}: {}\n  input saved to {}\n  replay: \
                         ferrolm-fuzz {} --replay {}",
                        f.target,
                        f.case,
                        f.seed,
                        f.what,
                        f.saved.display(),
                        f.target,
                        f.saved.display()
                    );
                }
            },
            Err(e) => {
                eprintln!(
                    "{}: cannot write to {}: {e}",
                    target.name,
                    args.out.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
