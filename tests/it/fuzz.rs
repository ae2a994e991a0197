//! The fuzz targets' inputs on stable Rust: the seeds (`fuzz/seeds/<target>/`) and every
//! input a fuzzer found (`fuzz/regressions/<target>/`), each through the same checks
//! as the target (`lowkey::fuzz`), so a found input stays a regression test.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("a folder entry").path()));
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no inputs for {target} in fuzz/seeds or fuzz/regressions"
    );
    for file in files {
        // The failing input's name shows in the test's output.
        eprintln!("{target}: {}", file.display());
        check(&std::fs::read(&file).expect("an input file"));
    }
}

#[test]
fn signature_header_inputs_pass_the_fuzz_checks() {
    replay("signature_headers", lowkey::fuzz::signature_headers);
}

#[test]
fn config_inputs_pass_the_fuzz_checks() {
    replay("config", lowkey::fuzz::config);
}

#[test]
fn queue_inputs_pass_the_fuzz_checks() {
    replay("queue", lowkey::fuzz::queue);
}

#[test]
fn http_inputs_pass_the_fuzz_checks() {
    replay("http", lowkey::fuzz::http);
}
