//! Issue 15.3 for Rust workers: rolling reloads of `examples/cluster_rust`
//! (hyper) back to back under constant load (32 clients) until 10,000
//! requests were sent during reloads; counts failed requests, and idle
//! keep-alive closes apart. `APP=examples/cluster_app.js` runs the same on
//! Node workers.
//!
//! ```sh
//! cargo bench --bench reload            # new connection per request
//! cargo bench --bench reload -- ka      # keep-alive
//! ```
use child_process as cp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    idle: AtomicU64,
    during: AtomicU64,
}

#[tokio::main]
async fn main() -> cp::Result<()> {
    let keepalive = std::env::args().any(|a| a == "ka");
    let app = match std::env::var("APP") {
        Ok(app) => app,
        Err(_) => rust_worker(),
    };
    let mut primary = cp::cluster(app).env("PORT", "0").workers(2).start().await?;
    let mut port = 0;
    let mut n = 0;
    while n < 2 {
        if let Some(cp::cluster::Event::Listening {
            address: cp::cluster::Address::Tcp(a),
            ..
        }) = primary.next_event().await
        {
            port = a.port();
            n += 1;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reloading = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counts::default());
    let mut tasks = vec![];
    for _ in 0..32 {
        let (stop, reloading, c) = (stop.clone(), reloading.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<tokio::io::BufReader<tokio::net::TcpStream>> = None;
            while !stop.load(Relaxed) {
                let during = reloading.load(Relaxed);
                let r = tokio::time::timeout(Duration::from_secs(2), async {
                    if !keepalive {
                        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .await?;
                        let mut t = String::new();
                        s.read_to_string(&mut t).await?;
                        return std::io::Result::Ok((t.contains(" 200 "), true));
                    }
                    if conn.is_none() {
                        conn = Some(tokio::io::BufReader::new(
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await?,
                        ));
                    }
                    let c = conn.as_mut().unwrap();
                    c.get_mut()
                        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await?;
                    let (mut any, mut len, mut close) = (false, 0usize, false);
                    loop {
                        let mut l = String::new();
                        if c.read_line(&mut l).await? == 0 {
                            return Ok((false, any));
                        }
                        any = true;
                        let lo = l.to_ascii_lowercase();
                        if let Some(v) = lo.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lo.starts_with("connection: close") {
                            close = true;
                        }
                        if l == "\r\n" {
                            break;
                        }
                    }
                    let mut b = vec![0; len];
                    c.read_exact(&mut b).await?;
                    if close {
                        conn = None;
                    }
                    Ok((true, true))
                })
                .await;
                if during {
                    c.during.fetch_add(1, Relaxed);
                }
                match r {
                    Ok(Ok((true, _))) => {
                        c.ok.fetch_add(1, Relaxed);
                    }
                    Ok(Ok((false, false))) => {
                        c.idle.fetch_add(1, Relaxed);
                        conn = None;
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset && keepalive => {
                        c.idle.fetch_add(1, Relaxed);
                        conn = None;
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        c.failed.fetch_add(1, Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut reloads = 0;
    while c.during.load(Relaxed) < 10_000 {
        reloading.store(true, Relaxed);
        let r = primary.reload().await?;
        assert!(r.failed.is_none(), "{r:?}");
        reloads += 1;
        if let Ok(ms) = std::env::var("PAUSE_MS") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
    }
    // Let the last retired workers drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reloading.store(false, Relaxed);
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!("{} reloads in {:?}: {} requests during reloads, {} answered in all, {} failed, {} idle closes",
        reloads, t0.elapsed(), c.during.load(Relaxed), c.ok.load(Relaxed), c.failed.load(Relaxed), c.idle.load(Relaxed));
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(1), primary.next_event()).await
    {
        if let cp::cluster::Event::Error { .. } = e {
            println!("{e:?}");
        }
    }
    primary.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// The Rust worker example, built in release.
fn rust_worker() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--example", "cluster_rust"])
        .current_dir(root)
        .status()
        .expect("cargo build");
    assert!(status.success());
    format!("{root}/target/release/examples/cluster_rust")
}
