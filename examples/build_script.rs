//! A build script the way people write shell scripts: a few commands in
//! sequence, each checked, no async runtime. The compile step shows the
//! compiler's output live (`Stdio::tee()`), and if it fails the error still
//! says why, with the tail of its stderr.
//!
//! `cargo run --example build_script`

use std::time::Duration;

use child_process as cp;

fn main() -> cp::Result<()> {
    let dir = std::env::temp_dir().join(format!("cp-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let rustc = cp::exec_file("rustc", ["--version"]).text_sync()?;
    println!("toolchain: {rustc}");

    // An unused variable: rustc warns, live, on our stderr.
    std::fs::write(
        dir.join("hello.rs"),
        "fn main() { let unused = 1; println!(\"hello from a built binary\"); }\n",
    )?;
    println!("compiling (the warning below is rustc's, shown as it runs):");
    cp::exec_file("rustc", ["-O", "hello.rs", "-o", "hello"])
        .cwd(&dir)
        .timeout(Duration::from_secs(120))
        .stdout(cp::Stdio::inherit())
        .stderr(cp::Stdio::tee())
        .run_sync()?;
    println!("built {}", dir.join("hello").display());

    let greeting = cp::exec_file("./hello", [""; 0]).cwd(&dir).text_sync()?;
    println!("ran it: {greeting}");

    // No shell needed for a pipeline either.
    let size = cp::exec_file("cat", ["hello"])
        .cwd(&dir)
        .pipe(cp::exec_file("wc", ["-c"]))
        .text_sync()?;
    println!("binary size: {} bytes", size.trim());

    // A failing step stops a script with an error that says what failed,
    // with the compiler's last lines: here it is caught and shown instead.
    std::fs::write(dir.join("broken.rs"), "fn main() { let x: u8 = \"no\"; }\n")?;
    let failed = cp::exec_file("rustc", ["broken.rs"])
        .cwd(&dir)
        .stderr(cp::Stdio::tee())
        .run_sync();
    if let Err(err) = failed {
        println!("a failing step reports:\n{err}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
