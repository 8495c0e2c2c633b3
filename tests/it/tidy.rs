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

/// The module a source file is (`src/child/mod.rs` is `child`,
/// `src/child/collect.rs` is `child::collect`).
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Issue 12: the files follow the layers, so no file imports from a file
/// that imports it (directly or around a longer circle). A submodule may
/// use its parent (`super::`), which is how Rust nests, not a circle.
#[test]
fn no_import_circles() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = sources().iter().map(|p| module_of(p)).collect();
    for path in sources() {
        if path.ends_with("tests.rs") || path.ends_with("lib.rs") {
            continue;
        }
        let from = module_of(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests (after `#[cfg(test)]`) may use anything.
        let code = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            // Every `crate::path`: in `use` lines and inline.
            for rest in line.split("crate::").skip(1) {
                // The longest known module the path starts with.
                let path: Vec<&str> = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap()
                    .split("::")
                    .collect();
                let target = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|m| modules.contains(m));
                if let Some(target) = target {
                    // Into its own subtree, or up to its parent: nesting.
                    if target != from
                        && !target.starts_with(&format!("{from}::"))
                        && !from.starts_with(&format!("{target}::"))
                    {
                        edges.entry(from.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            panic!("import circle: {} -> {node}", stack[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
}
