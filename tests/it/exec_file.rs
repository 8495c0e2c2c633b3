//! `exec_file`: literal arguments, and spawn failures that say what and why.

use std::os::unix::fs::PermissionsExt;

use child_process as cp;

use crate::support::{both_forms, TempDir};

#[track_caller]
fn spawn_error(err: cp::Error) -> (String, std::io::ErrorKind) {
    let msg = err.to_string();
    match err {
        cp::Error::Spawn { source, .. } => (msg, source.kind()),
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
}

both_forms! {
    async fn arguments_are_literal(mode: Mode) {
        let args = ["a b", "it's", "\"q\"", "$HOME", "*", "", "-n", "ü"];
        let out = mode.run(cp::exec_file("printf", std::iter::once("%s|").chain(args))
            ).await
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "a b|it's|\"q\"|$HOME|*||-n|ü|"
        );
    }

    async fn non_zero_exit_names_the_quoted_command(mode: Mode) {
        let err = mode.run(cp::exec_file("sh", ["-c", "echo oops >&2; exit 2"])
            ).await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("`sh -c 'echo oops >&2; exit 2'` failed: exit status: 2"),
            "{msg}"
        );
        assert!(msg.ends_with("oops"), "{msg}");
    }

    async fn missing_program(mode: Mode) {
        let (msg, kind) = spawn_error(mode.run(cp::exec_file("/no/such/program", ["x"])).await.unwrap_err());
        assert!(
            msg.contains("`/no/such/program`") && msg.contains("not found"),
            "{msg}"
        );
        assert_eq!(kind, std::io::ErrorKind::NotFound);
        let (msg, kind) = spawn_error(
            mode.run(cp::exec_file("no-such-program-anywhere", [""; 0])
                ).await
                .unwrap_err(),
        );
        assert!(
            msg.contains("`no-such-program-anywhere` not found in PATH"),
            "{msg}"
        );
        assert_eq!(kind, std::io::ErrorKind::NotFound);
    }

    async fn missing_cwd_is_blamed_on_the_cwd(mode: Mode) {
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("ls", [""; 0])
                .cwd("/no/such/dir")
                ).await
                .unwrap_err(),
        );
        assert!(msg.contains("cwd `/no/such/dir` does not exist"), "{msg}");
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("ls", [""; 0])
                .cwd("/etc/passwd")
                ).await
                .unwrap_err(),
        );
        assert!(
            msg.contains("cwd `/etc/passwd` is not a directory"),
            "{msg}"
        );
    }

    async fn directory_as_program(mode: Mode) {
        let (msg, kind) = spawn_error(mode.run(cp::exec_file("/tmp", [""; 0])).await.unwrap_err());
        assert!(msg.contains("`/tmp` is a directory"), "{msg}");
        assert_eq!(kind, std::io::ErrorKind::PermissionDenied);
    }

    async fn non_executable_file_as_program(mode: Mode) {
        let dir = TempDir::new("noexec");
        let file = dir.0.join("script.sh");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (msg, kind) = spawn_error(mode.run(cp::exec_file(&file, [""; 0])).await.unwrap_err());
        assert!(
            msg.contains(&format!("`{}` is not executable", file.display())),
            "{msg}"
        );
        assert_eq!(kind, std::io::ErrorKind::PermissionDenied);

        // A script without `#!` is not run through a shell behind your back.
        std::fs::write(&file, "echo hi\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (msg, _) = spawn_error(mode.run(cp::exec_file(&file, [""; 0])).await.unwrap_err());
        assert!(msg.contains("not in an executable format"), "{msg}");
    }

    async fn nul_bytes_and_bad_env_keys_fail_before_spawning(mode: Mode) {
        let (msg, kind) = spawn_error(mode.run(cp::exec_file("echo", ["ok", "a\0b"])).await.unwrap_err());
        assert!(msg.contains("argument 2 holds a NUL byte"), "{msg}");
        assert!(msg.contains(r"$'a\x00b'"), "{msg}");
        assert_eq!(kind, std::io::ErrorKind::InvalidInput);
        let (msg, _) = spawn_error(mode.run(cp::exec_file("ec\0ho", [""; 0])).await.unwrap_err());
        assert!(msg.contains("program holds a NUL byte"), "{msg}");
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("true", [""; 0])
                .env("A=B", "x")
                ).await
                .unwrap_err(),
        );
        assert!(msg.contains("invalid environment variable name"), "{msg}");
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("true", [""; 0])
                .env("", "x")
                ).await
                .unwrap_err(),
        );
        assert!(msg.contains("invalid environment variable name"), "{msg}");
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("true", [""; 0])
                .env("K", "a\0b")
                ).await
                .unwrap_err(),
        );
        assert!(
            msg.contains(r#"environment variable "K" holds a NUL byte"#),
            "{msg}"
        );
        let (msg, _) = spawn_error(
            mode.run(cp::exec_file("true", [""; 0])
                .cwd("/tm\0p")
                ).await
                .unwrap_err(),
        );
        assert!(msg.contains("cwd holds a NUL byte"), "{msg}");
        let (msg, _) = spawn_error(mode.run(cp::exec_file("", [""; 0])).await.unwrap_err());
        assert!(msg.contains("program is empty"), "{msg}");
    }

    async fn path_set_for_the_child_is_used_for_lookup(mode: Mode) {
        let dir = TempDir::new("path");
        let tool = dir.0.join("my-tool");
        std::fs::write(&tool, "#!/bin/sh\necho from my-tool\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.0.display());
        let out = mode.text(cp::exec_file("my-tool", [""; 0]).env("PATH", path)).await.unwrap();
        assert_eq!(out, "from my-tool");
    }

    /// Issue 11: E2BIG names the limit that was hit (one string over
    /// 128 KiB, or the total over ARG_MAX), and the message does not carry
    /// megabytes of argv.
    async fn argument_list_too_long(mode: Mode) {
        let huge = "x".repeat(200_000);
        let args: Vec<&str> = std::iter::repeat_n(huge.as_str(), 100).collect();
        let err = mode.run(cp::exec_file("true", args)).await.unwrap_err();
        let (msg, _) = spawn_error(err);
        assert!(
            msg.contains("argument 1 is 200000 bytes") && msg.contains("MAX_ARG_STRLEN"),
            "{msg}"
        );
        assert!(msg.len() < 2048, "{} bytes of message", msg.len());

        let big = "y".repeat(100 * 1024);
        let args: Vec<&str> = std::iter::repeat_n(big.as_str(), 40).collect();
        let err = mode.run(cp::exec_file("true", args)).await.unwrap_err();
        let (msg, _) = spawn_error(err);
        assert!(
            msg.contains("argument list too long") && msg.contains("ARG_MAX"),
            "{msg}"
        );
        assert!(msg.len() < 2048, "{} bytes of message", msg.len());
    }
}
