//! Repository hygiene checked by the test suite itself (xshell's tidy.rs).

use std::path::{Path, PathBuf};

#[test]
fn formatted() {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo fmt");
    assert!(status.success(), "run `cargo fmt --all`");
}

/// Every `.rs` file under `src/`, at any depth.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

#[test]
fn no_unsafe_outside_sys() {
    let sys = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sys");
    for path in sources().into_iter().filter(|p| !p.starts_with(&sys)) {
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

#[test]
fn only_spawn_rs_creates_processes() {
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() != "spawn.rs" {
            assert!(
                !text.contains("sys::spawn("),
                "{} calls sys::spawn; only spawn.rs may",
                path.display()
            );
        }
    }
}

/// `sys` holds every syscall: the rest of the crate calls no `libc`
/// function and no `nix` syscall wrapper directly.
#[test]
fn syscalls_only_in_sys() {
    let sys = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sys");
    // Unit tests (`tests.rs`) may poke at fds to check what the code did.
    let checked = sources()
        .into_iter()
        .filter(|p| !p.starts_with(&sys) && !p.ends_with("tests.rs"));
    for path in checked {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let libc_call = code.contains("libc::") && {
                // constants (libc::SIGKILL) are fine; calls (libc::kill( ) are not
                code.split("libc::").skip(1).any(|rest| {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    rest[name.len()..].starts_with('(')
                        && name.chars().next().is_some_and(|c| c.is_lowercase())
                })
            };
            let nix_call = code.contains("nix::sys::socket::")
                || code.contains("nix::unistd::")
                || code.contains("nix::fcntl::fcntl");
            assert!(
                !(libc_call || nix_call),
                "{}:{} makes a syscall outside src/sys/: {line}",
                path.display(),
                i + 1
            );
        }
    }
}
