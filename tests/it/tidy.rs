//! Repository hygiene checked by the test suite itself (xshell's tidy.rs).

#[test]
fn formatted() {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo fmt");
    assert!(status.success(), "run `cargo fmt --all`");
}

#[test]
fn no_unsafe_outside_sys() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let hits = text
                .lines()
                .filter(|l| l.contains("unsafe {") || l.contains("unsafe fn"))
                .count();
            assert_eq!(
                hits,
                0,
                "{} uses unsafe; it belongs in src/sys/",
                path.display()
            );
        }
    }
}

#[test]
fn only_spawn_rs_creates_processes() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.file_name().unwrap() != "spawn.rs" {
            assert!(
                !text.contains("sys::spawn("),
                "{} calls sys::spawn; only spawn.rs may",
                path.display()
            );
        }
    }
}
