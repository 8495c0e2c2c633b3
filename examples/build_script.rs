//! A build script the way people write shell scripts: a few commands in
//! sequence, each checked, no async runtime.
//!
//! `cargo run --example build_script`

use std::time::Duration;

use child_process as cp;

fn main() -> cp::Result<()> {
    let dir = std::env::temp_dir().join(format!("cp-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let rustc = cp::exec_file("rustc", ["--version"]).text_sync()?;
    println!("toolchain: {rustc}");

    std::fs::write(
        dir.join("hello.rs"),
        "fn main() { println!(\"hello from a built binary\"); }\n",
    )?;
    cp::exec_file("rustc", ["-O", "hello.rs", "-o", "hello"])
        .cwd(&dir)
        .timeout(Duration::from_secs(120))
        .run_sync()?;
    println!("built {}", dir.join("hello").display());

    let greeting = cp::exec_file("./hello", [""; 0]).cwd(&dir).text_sync()?;
    println!("ran it: {greeting}");

    let size = cp::exec("wc -c < hello").cwd(&dir).text_sync()?;
    println!("binary size: {} bytes", size.trim());

    // A failing step stops the script with an error that says what failed.
    if let Err(err) = cp::exec("ls no-such-file").cwd(&dir).run_sync() {
        println!("a failing step reports: {err}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
