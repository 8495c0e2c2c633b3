//! `fork` against real programs: a Rust worker, a Node child, a Node parent,
//! and raw shells that write bytes on the channel fd.

use std::time::Duration;

use child_process as cp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::support::{alive, fixture, have_node, wait_until_async, worker_exe};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Job {
    id: u32,
    name: String,
    tags: Vec<String>,
}

/// Strings that break naive framing or encoding.
fn tricky_strings() -> Vec<String> {
    vec![
        "line\nbreak".into(),
        "crlf\r\n".into(),
        "\u{2028}\u{2029}".into(),
        "emoji 🦀👩‍👩‍👧".into(),
        "nul \u{0000} inside".into(),
        "quote \" backslash \\".into(),
        "é ß 中文".into(),
        String::new(),
    ]
}

/// The checks shared by the Rust worker and the Node child.
async fn exchange(worker: &mut cp::Child, big: usize) {
    // Typed round trip.
    let job = Job {
        id: 7,
        name: "build".into(),
        tags: vec!["a".into(), "b".into()],
    };
    worker.send(&job).await.unwrap();
    assert_eq!(worker.recv::<Job>().await.unwrap(), Some(job));

    // Every JSON type at the top level.
    for value in [
        json!(null),
        json!(42),
        json!("s"),
        json!([1, "two"]),
        json!(true),
    ] {
        worker.send(&value).await.unwrap();
        assert_eq!(worker.recv::<Value>().await.unwrap(), Some(value));
    }

    // Tricky strings.
    for s in tricky_strings() {
        worker.send(&json!({ "s": s })).await.unwrap();
        assert_eq!(
            worker.recv::<Value>().await.unwrap(),
            Some(json!({ "s": s }))
        );
    }

    // 10,000 messages in one burst, then read them all back in order.
    let (tx, mut rx) = worker.take_channel().unwrap().split();
    let sender = tokio::spawn(async move {
        for i in 0..10_000u32 {
            tx.send(&json!({ "i": i })).await.unwrap();
        }
        tx
    });
    for i in 0..10_000u32 {
        let msg: Value = rx.recv().await.unwrap().expect("message");
        assert_eq!(msg, json!({ "i": i }));
    }
    let tx = sender.await.unwrap();

    // One big message.
    let payload: String = "x".repeat(big - 100) + "🦀\n\u{2028}end";
    tx.send(&json!({ "big": payload })).await.unwrap();
    let back: Value = rx.recv().await.unwrap().unwrap();
    assert!(back["big"] == payload, "big message differs");
}

#[tokio::test]
async fn rust_parent_and_rust_worker() {
    let mut worker = cp::fork(worker_exe()).spawn().unwrap();
    exchange(&mut worker, 10 << 20).await;
    drop(worker.take_channel());
    assert!(worker.wait().await.unwrap().success());
}

#[tokio::test]
async fn rust_parent_and_node_child() {
    if !have_node() {
        return;
    }
    let mut child = cp::fork(fixture("echo.js")).spawn().unwrap();
    exchange(&mut child, 5 << 20).await;
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn node_parent_and_rust_worker_on_fd_3_and_5() {
    if !have_node() {
        return;
    }
    for layout in ["3", "5"] {
        let out = cp::exec_file(
            "node",
            [
                fixture("node_parent.js").as_os_str(),
                worker_exe().as_os_str(),
                layout.as_ref(),
            ],
        )
        .timeout(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("node parent with the channel at fd {layout}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "fd {layout}"
        );
    }
}

#[tokio::test]
async fn node_child_exiting_mid_burst_loses_nothing() {
    if !have_node() {
        return;
    }
    let mut child = cp::fork(fixture("echo.js")).spawn().unwrap();
    child.send(&json!({ "burst": 5000 })).await.unwrap();
    for i in 0..5000 {
        assert_eq!(
            child.recv::<Value>().await.unwrap(),
            Some(json!({ "i": i })),
            "message {i}"
        );
    }
    assert_eq!(child.recv::<Value>().await.unwrap(), None);
    assert!(child.wait().await.unwrap().success());
    let err = child.send(&json!("late")).await.unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
}

#[tokio::test]
async fn rust_worker_exit_code_and_burst_before_exit() {
    let mut worker = cp::fork(worker_exe()).spawn().unwrap();
    worker.send(&json!({ "burst": 3000 })).await.unwrap();
    for i in 0..3000 {
        assert_eq!(
            worker.recv::<Value>().await.unwrap(),
            Some(json!({ "i": i }))
        );
    }
    assert_eq!(worker.recv::<Value>().await.unwrap(), None);
    assert!(worker.wait().await.unwrap().success());

    let mut worker = cp::fork(worker_exe()).spawn().unwrap();
    worker
        .send(&json!({ "cmd": "exit", "code": 9 }))
        .await
        .unwrap();
    assert_eq!(worker.recv::<Value>().await.unwrap(), None);
    assert_eq!(worker.wait().await.unwrap().code(), Some(9));
}

#[tokio::test]
async fn worker_environment_loses_the_channel_variables() {
    let mut worker = cp::fork(worker_exe()).spawn().unwrap();
    worker.send(&json!({ "env": true })).await.unwrap();
    assert_eq!(
        worker.recv::<Value>().await.unwrap(),
        Some(json!({ "env": false }))
    );
    // A parent that disconnects ends the worker's recv loop: it exits by itself.
    worker.disconnect();
    assert!(worker.wait().await.unwrap().success());
    // Issue 10: after disconnect the channel is closed, not missing.
    let err = worker.send(&json!(1)).await.unwrap_err();
    assert!(
        matches!(err, cp::Error::Channel(cp::ChannelError::Closed)),
        "{err}"
    );
    assert_eq!(worker.recv::<Value>().await.unwrap(), None);
}

#[tokio::test]
async fn dropping_the_child_closes_the_channel_and_the_worker_exits() {
    let worker = cp::fork(worker_exe()).spawn().unwrap();
    let pid = worker.pid() as i32;
    drop(worker);
    wait_until_async(Duration::from_secs(5), "worker exits", || !alive(pid)).await;
}

#[tokio::test]
async fn bad_bytes_on_the_wire_are_errors_for_that_message_alone() {
    // A raw peer: a shell writing bytes straight to the channel fd.
    let script =
        r#"printf '{"a":1}\nnot json\n\377\376\n\n{"cmd":"NODE_SOMETHING"}\n{"b":2}\n' >&3"#;
    let mut child = cp::fork("/bin/sh").args(["-c", script]).spawn().unwrap();
    assert_eq!(
        child.recv::<Value>().await.unwrap(),
        Some(json!({ "a": 1 }))
    );
    let err = child.recv::<Value>().await.unwrap_err();
    assert!(
        matches!(err, cp::Error::Channel(cp::ChannelError::Decode { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("not json"), "{err}");
    let err = child.recv::<Value>().await.unwrap_err();
    assert!(
        matches!(err, cp::Error::Channel(cp::ChannelError::Decode { .. })),
        "{err}"
    );
    // The blank line is skipped, the NODE_ message is not delivered.
    assert_eq!(
        child.recv::<Value>().await.unwrap(),
        Some(json!({ "b": 2 }))
    );
    assert_eq!(child.recv::<Value>().await.unwrap(), None);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn wrong_type_is_an_error_and_the_next_message_still_arrives() {
    let script = r#"printf '{"id":"not a number"}\n{"id":1,"name":"n","tags":[]}\n' >&3"#;
    let mut child = cp::fork("/bin/sh").args(["-c", script]).spawn().unwrap();
    assert!(child.recv::<Job>().await.is_err());
    assert_eq!(
        child.recv::<Job>().await.unwrap(),
        Some(Job {
            id: 1,
            name: "n".into(),
            tags: vec![]
        })
    );
    child.wait().await.unwrap();
}

#[tokio::test]
async fn over_long_line_is_skipped_and_the_channel_stays_in_sync() {
    let script = r#"head -c 3000000 /dev/zero | tr '\0' x >&3; printf '\n{"after":true}\n' >&3"#;
    let mut child = cp::fork("/bin/sh").args(["-c", script]).spawn().unwrap();
    let mut channel = child.take_channel().unwrap();
    channel.set_max_message_len(1 << 20);
    let err = channel.recv::<Value>().await.unwrap_err();
    assert!(
        matches!(err, cp::Error::Channel(cp::ChannelError::TooLong { .. })),
        "{err}"
    );
    assert_eq!(
        channel.recv::<Value>().await.unwrap(),
        Some(json!({ "after": true }))
    );
    child.wait().await.unwrap();
}

#[tokio::test]
async fn fork_options() {
    // silent pipes stdout; `.js` runs under node; args and env reach it.
    if have_node() {
        let dir = crate::support::TempDir::new("fork-js");
        let script = dir.0.join("hello.js");
        std::fs::write(&script, "console.log(process.argv.slice(2).join(','), process.env.CP_FORK, typeof process.send)").unwrap();
        let child = cp::fork(&script)
            .args(["a", "b"])
            .env("CP_FORK", "yes")
            .silent(true)
            .spawn()
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a,b yes function\n");
    }
    let err = cp::fork("/bin/true")
        .exec_args(["--x"])
        .spawn()
        .unwrap_err();
    assert!(
        err.to_string().contains("exec_args need an interpreter"),
        "{err}"
    );
    let err = cp::fork("/no/such/worker").spawn().unwrap_err();
    assert!(err.to_string().contains("/no/such/worker"), "{err}");
    // A child that is not forked has no channel.
    let mut plain = cp::spawn("true", [""; 0]).unwrap();
    assert!(plain.recv::<Value>().await.is_err());
    plain.wait().await.unwrap();
}

#[tokio::test]
async fn from_parent_without_a_channel_is_none() {
    // This test process was not forked by a Node-style parent.
    assert!(cp::Channel::from_parent().unwrap().is_none());
}

#[tokio::test]
async fn worker_exits_when_its_parent_is_killed() {
    use tokio::io::AsyncBufReadExt;
    let mut parent = cp::Command::new(worker_exe())
        .arg("--fork-and-wait")
        .spawn()
        .unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let worker: i32 = line.trim().parse().unwrap();
    assert!(alive(worker));
    parent.kill(cp::Signal::SIGKILL).unwrap();
    parent.wait().await.unwrap();
    // The worker's recv sees the channel close; its loop ends; it exits.
    wait_until_async(Duration::from_secs(5), "orphaned worker exits", || {
        !alive(worker)
    })
    .await;
}

/// A Node parent may put the channel at fd 1 (`stdio: ['inherit', 'ipc',
/// ..]`). Adopting it must not close fd 1 under std's stdout: the channel
/// takes a duplicate, so a file opened after the channel is dropped never
/// gets fd 1 (and `println!` output never lands in it).
#[tokio::test]
async fn a_channel_at_fd_1_leaves_stdout_open() {
    if !have_node() {
        return;
    }
    let script = r#"
        const cp = require('child_process');
        const w = cp.spawn(process.argv[1], ['--stdio-channel'], { stdio: ['inherit', 'ipc', 'pipe'] });
        let err = '';
        w.stderr.on('data', (d) => { err += d; });
        w.on('message', (m) => console.log('message', JSON.stringify(m)));
        w.on('close', (code) => { console.log(err.trim()); console.log('exit', code); });
    "#;
    let out = cp::exec_file(
        "node",
        [
            std::ffi::OsStr::new("-e"),
            script.as_ref(),
            worker_exe().as_os_str(),
        ],
    )
    .timeout(Duration::from_secs(30))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("message \"hi\""), "{text}");
    assert!(text.contains("exit 0"), "{text}");
    let fd: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("opened fd "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(fd > 2, "a file opened after the channel got fd {fd}");
}
