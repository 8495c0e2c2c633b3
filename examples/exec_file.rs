//! Run a program with literal arguments (no shell), and see the errors that
//! name what went wrong.
//!
//! `cargo run --example exec_file`

use child_process as cp;

#[tokio::main]
async fn main() -> cp::Result<()> {
    // Spaces, quotes, `$HOME` and `*` reach the program as they are.
    let text = cp::exec_file("printf", ["[%s]\n", "a b", "it's", "$HOME", "*"])
        .text()
        .await?;
    println!("{text}");

    for err in [
        cp::exec_file("/no/such/tool", ["--help"])
            .await
            .unwrap_err(),
        cp::exec_file("ls", ["."])
            .cwd("/no/such/dir")
            .await
            .unwrap_err(),
        cp::exec_file("sh", ["-c", "echo 'disk full' >&2; exit 3"])
            .await
            .unwrap_err(),
    ] {
        println!("error: {err}");
    }
    Ok(())
}
