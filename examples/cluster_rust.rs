//! A cluster of Rust workers serving HTTP with hyper on one port, under the
//! crate's primary. The same program is the primary (run it) and the
//! worker (the primary forks it with `NODE_UNIQUE_ID` set).
//!
//! ```text
//! PORT=8000 cargo run --example cluster_rust
//! curl localhost:8000/
//! ```
//!
//! `CLUSTER_WORKERS` sets the worker count (default: one per CPU),
//! `CLUSTER_SHARED=1` shares the listening socket instead of round robin.
//! Ctrl-C or SIGTERM drains the workers and stops.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use child_process as cp;
use cp::cluster::{Event, Scheduling, Worker};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};

#[tokio::main]
async fn main() -> cp::Result<()> {
    match Worker::from_primary().await? {
        Some(worker) => serve(worker).await,
        None => primary().await,
    }
}

async fn primary() -> cp::Result<()> {
    let mut setup = cp::cluster(std::env::current_exe()?);
    if let Some(n) = std::env::var("CLUSTER_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        setup = setup.workers(n);
    }
    if std::env::var_os("CLUSTER_SHARED").is_some() {
        setup = setup.scheduling(Scheduling::Shared);
    }
    let mut primary = setup.start().await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            event = primary.next_event() => match event {
                Some(Event::Listening { worker, address }) => {
                    let pid = pid_of(&primary, worker).await;
                    println!("worker {worker} (pid {pid}) listening on {address}");
                }
                Some(Event::Exit { worker, status, expected }) => {
                    println!("worker {worker} exited: {status} (expected: {expected})");
                }
                Some(Event::Message { worker, message }) => println!("worker {worker}: {message}"),
                Some(_) => {}
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let report = primary.shutdown(Duration::from_secs(10)).await?;
    println!("stopped; drained: {}", report.drained);
    Ok(())
}

async fn pid_of(primary: &cp::cluster::Primary, worker: cp::cluster::WorkerId) -> u32 {
    let workers = primary.workers().await.unwrap_or_default();
    workers.iter().find(|w| w.id == worker).map_or(0, |w| w.pid)
}

async fn serve(worker: Worker) -> cp::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let mut listener = worker.listen(&format!("0.0.0.0:{port}")).await?;
    let id = worker.id();
    let mut connections = tokio::task::JoinSet::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // After `disconnect`, `accept` returns what was already handed to us,
    // then an error: serve those, then finish the connections in progress.
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { break };
                connections.spawn(connection(stream, id, stopping.clone()));
            }
            _ = worker.disconnected(), if !*stop.borrow() => {
                let _ = stop.send(true);
            }
        }
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One HTTP/1.1 connection. Once the worker is stopping, every response
/// says `Connection: close`, and a connection idle between two requests is
/// closed; one that has not sent its first request yet is served first
/// (hyper would count it as idle and close it unanswered).
async fn connection(
    stream: tokio::net::TcpStream,
    id: cp::cluster::WorkerId,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let served = Arc::new(AtomicUsize::new(0));
    let service = {
        let (served, stopping) = (served.clone(), stopping.clone());
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            served.fetch_add(1, Ordering::Relaxed);
            let closing = *stopping.borrow();
            async move {
                let body = format!(
                    "{{\"id\":{id},\"pid\":{},\"path\":\"{}\"}}",
                    std::process::id(),
                    req.uri().path()
                );
                let mut response = Response::new(Full::new(Bytes::from(body)));
                if closing {
                    response
                        .headers_mut()
                        .insert(hyper::header::CONNECTION, "close".parse().unwrap());
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|&s| s) => {}
    }
    if served.load(Ordering::Relaxed) > 0 {
        // Keep-alive: finish the request in progress, then close.
        conn.as_mut().graceful_shutdown();
    }
    let _ = conn.await;
}
