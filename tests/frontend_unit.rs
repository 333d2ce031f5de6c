//! The frontend's pure modules (the operation log's bookkeeping, the view arithmetic) under Node's
//! built-in test runner: `node --test tests/frontend/` (no npm package needed).

use std::path::Path;
use std::process::Command;

#[test]
fn the_frontend_unit_tests_pass_under_node() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("node")
        .arg("--test")
        .arg("tests/frontend/")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`node` does not run ({e}): install Node.js (18 or later)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test tests/frontend/ failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // A runner that found no test at all would pass too: make sure some ran.
    assert!(
        stdout.contains("# pass ") && !stdout.contains("# pass 0"),
        "no frontend unit test ran:\n{stdout}\n{stderr}"
    );
}
