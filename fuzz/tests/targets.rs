//! Every fuzz target for about two seconds, each in its own process (an allocation over the
//! cap that the code under test does not handle aborts that process, not the test harness).
//! CI runs the same binary for 30 s per target (`.ci/run`).

use std::process::Command;

fn fuzz_for_two_seconds(target: &str) {
    let out_dir = std::env::temp_dir().join(format!("ferrolm-fuzz-crashes-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_ferrolm-fuzz"))
        .args([target, "--seconds", "2", "--seed", "20261204", "--out"])
        .arg(&out_dir)
        .output()
        .expect("the fuzz binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{target} failed ({}):\n{text}",
        output.status
    );
    assert!(text.contains("no failure"), "{text}");
}

#[test]
fn gguf() {
    fuzz_for_two_seconds("gguf");
}

#[test]
fn gguf_file() {
    fuzz_for_two_seconds("gguf-file");
}

#[test]
fn gguf_vocab() {
    fuzz_for_two_seconds("gguf-vocab");
}

#[test]
fn tokenizer_json() {
    fuzz_for_two_seconds("tokenizer-json");
}

#[test]
fn tiktoken() {
    fuzz_for_two_seconds("tiktoken");
}

#[test]
fn wire() {
    fuzz_for_two_seconds("wire");
}

#[test]
fn every_target_has_a_test_here() {
    let listed = Command::new(env!("CARGO_BIN_EXE_ferrolm-fuzz"))
        .arg("--list")
        .output()
        .expect("the fuzz binary runs");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        [
            "gguf",
            "gguf-file",
            "gguf-vocab",
            "tokenizer-json",
            "tiktoken",
            "wire"
        ]
    );
}

/// Every input in `fuzz/regressions` (named `TARGET-what.bin`) once found a failure; each must
/// now run cleanly.
#[test]
fn saved_failures_run_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(target) = [
            "gguf-file",
            "gguf-vocab",
            "gguf",
            "tokenizer-json",
            "tiktoken",
            "wire",
        ]
        .into_iter()
        .find(|t| name.starts_with(&format!("{t}-"))) else {
            continue;
        };
        let output = Command::new(env!("CARGO_BIN_EXE_ferrolm-fuzz"))
            .args([target, "--replay"])
            .arg(&path)
            .output()
            .expect("the fuzz binary runs");
        if !output.status.success() {
            failures.push(format!(
                "{name}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
