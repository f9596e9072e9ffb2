//! Every fuzz target for about two seconds, each in its own process (an allocation over the
//! cap that the code under test does not handle aborts that process, not the test harness).
//! CI runs the same binary for 60 s per target (`.ci/run`).

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
