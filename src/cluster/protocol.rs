//! Node's cluster protocol on the wire: `NODE_CLUSTER` messages over the
//! IPC channel (`lib/internal/cluster/{primary,child,utils}.js`, v20; the
//! message table and a checked transcript are in CLUSTER.md §1.3-1.4).
//!
//! Pure functions from messages to keys and replies, so the primary and
//! the Rust worker share them and the unit tests need no process.

use serde_json::{json, Map, Value};

/// The `cmd` of every cluster message.
pub(crate) const CMD: &str = "NODE_CLUSTER";

/// The backlog Node gives `listen()` when none is asked for.
pub(crate) const DEFAULT_BACKLOG: i32 = 511;

/// What a `queryServer` (or `listening`) message asks for, read from the
/// worker's fields as `net.js listenInCluster` sends them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// Node's key, `address:port:addressType:fd:index` spelled as
    /// JavaScript's template literal spells the values.
    pub key: String,
    pub target: Target,
    pub backlog: i32,
    /// The worker's `server._getServerData()` (TLS ticket keys), echoed in
    /// every reply for the key.
    pub data: Value,
    /// `readableAll` / `writableAll` of a unix socket.
    pub mode: Option<u32>,
}

/// Where a worker wants to listen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// TCP: `host` is `None` for "every address" (Node binds `::`).
    Tcp {
        host: Option<String>,
        port: u16,
        v6: bool,
    },
    /// A unix socket path.
    Unix(String),
    /// UDP (`dgram`), always shared: the worker receives the bound socket.
    Udp {
        host: Option<String>,
        port: u16,
        v6: bool,
    },
    /// `listen({fd})`: an fd of the primary, which we do not hand out.
    Fd(i64),
}

/// Why a `queryServer` cannot be served as asked.
#[derive(Debug, PartialEq)]
pub(crate) struct BadQuery(pub String);

impl Query {
    /// Reads a `queryServer` or `listening` message.
    pub(crate) fn parse(msg: &Map<String, Value>) -> Result<Query, BadQuery> {
        let field = |name: &str| msg.get(name);
        let key = [
            field("address"),
            field("port"),
            field("addressType"),
            field("fd"),
            field("index"),
        ]
        .map(js_string)
        .join(":");
        let host = match field("address") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(other) => return Err(BadQuery(format!("address is not a string: {other}"))),
        };
        let port = || match field("port").and_then(Value::as_i64) {
            Some(p) if (0..=65535).contains(&p) => Ok(p as u16),
            _ => Err(BadQuery(format!(
                "port is not a port number: {}",
                js_string(field("port"))
            ))),
        };
        let target = if let Some(fd) = field("fd").and_then(Value::as_i64) {
            Target::Fd(fd)
        } else {
            match field("addressType") {
                Some(Value::Number(n)) if n.as_i64() == Some(4) || n.as_i64() == Some(6) => {
                    Target::Tcp {
                        host,
                        port: port()?,
                        v6: n.as_i64() == Some(6),
                    }
                }
                Some(Value::Number(n)) if n.as_i64() == Some(-1) => Target::Unix(
                    host.ok_or_else(|| BadQuery("a unix socket without a path".into()))?,
                ),
                Some(Value::String(s)) if s == "udp4" || s == "udp6" => Target::Udp {
                    host,
                    port: port()?,
                    v6: s == "udp6",
                },
                other => {
                    return Err(BadQuery(format!(
                        "unknown addressType {}",
                        js_string(other)
                    )))
                }
            }
        };
        let backlog = match field("backlog").and_then(Value::as_i64) {
            Some(b) if b > 0 => b.min(i32::MAX as i64) as i32,
            _ => DEFAULT_BACKLOG,
        };
        let all = |name| field(name).and_then(Value::as_bool).unwrap_or(false);
        let mode = match (all("readableAll"), all("writableAll")) {
            (false, false) => None,
            (r, w) => Some(0o600 | if r { 0o044 } else { 0 } | if w { 0o022 } else { 0 }),
        };
        Ok(Query {
            key,
            target,
            backlog,
            data: field("data").cloned().unwrap_or(Value::Null),
            mode,
        })
    }
}

/// A JSON value as a JavaScript template literal prints it: an absent
/// field is `undefined`, strings without quotes.
fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fields of a `NODE_CLUSTER` message; `None` for any other value.
pub(crate) fn cluster_message(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(msg) if msg.get("cmd").and_then(Value::as_str) == Some(CMD) => Some(msg),
        _ => None,
    }
}

/// The `act` of a cluster message, if it is one.
pub(crate) fn act(msg: &Map<String, Value>) -> Option<&str> {
    msg.get("act").and_then(Value::as_str)
}

/// A cluster message: `{cmd: 'NODE_CLUSTER', ...fields, seq}` (`utils.js
/// sendHelper`).
pub(crate) fn message(mut fields: Map<String, Value>, seq: u64) -> Value {
    let mut msg = Map::with_capacity(fields.len() + 2);
    msg.insert("cmd".into(), CMD.into());
    msg.append(&mut fields);
    msg.insert("seq".into(), seq.into());
    Value::Object(msg)
}

/// The fields of a reply to request `ack`.
pub(crate) fn reply(ack: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ack".into(), ack.into());
    m
}

/// The fields of a successful round-robin `queryServer` reply: no handle,
/// the worker's fake server reports `sockname` as its address.
pub(crate) fn rr_reply(
    ack: u64,
    key: &str,
    data: &Value,
    sockname: Option<std::net::SocketAddr>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("errno".into(), Value::Null);
    m.insert("key".into(), key.into());
    m.insert("ack".into(), ack.into());
    m.insert("data".into(), data.clone());
    if let Some(addr) = sockname {
        m.insert("sockname".into(), sockname_json(addr));
    }
    m
}

/// The fields of a shared-mode reply (sent with the bound socket) or of an
/// error reply (`errno` negative, no handle).
pub(crate) fn errno_reply(ack: u64, key: &str, data: &Value, errno: i32) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("errno".into(), errno.into());
    m.insert("key".into(), key.into());
    m.insert("ack".into(), ack.into());
    m.insert("data".into(), data.clone());
    m
}

/// libuv's errno for an i/o error: the negated OS errno (`-98` is
/// `EADDRINUSE`); `EINVAL` when the error carries none.
pub(crate) fn uv_errno(err: &std::io::Error) -> i32 {
    -err.raw_os_error().unwrap_or(libc::EINVAL)
}

/// `server.address()` as Node reports it.
pub(crate) fn sockname_json(addr: std::net::SocketAddr) -> Value {
    json!({
        "address": addr.ip().to_string(),
        "family": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "port": addr.port(),
    })
}

/// The fields of a `newconn` for `key`.
pub(crate) fn newconn(key: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("act".into(), "newconn".into());
    m.insert("key".into(), key.into());
    m
}

/// The fields of a message with only an `act`.
pub(crate) fn act_only(act: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("act".into(), act.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// The query of CLUSTER.md §1.4, byte for byte.
    #[test]
    fn the_transcripts_query_gives_nodes_key() {
        let q = Query::parse(&obj(json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":18082,"addressType":4,"backlog":0,"seq":1}))).unwrap();
        assert_eq!(q.key, "null:18082:4:undefined:0");
        assert_eq!(
            q.target,
            Target::Tcp {
                host: None,
                port: 18082,
                v6: false
            }
        );
        assert_eq!(q.backlog, DEFAULT_BACKLOG);
        assert_eq!(q.data, Value::Null);
    }

    #[test]
    fn the_reply_matches_the_transcript() {
        let addr = "[::]:18082".parse().unwrap();
        let reply = message(
            rr_reply(1, "null:18082:4:undefined:0", &Value::Null, Some(addr)),
            0,
        );
        let node: Value = serde_json::from_str(r#"{"cmd":"NODE_CLUSTER","errno":null,"key":"null:18082:4:undefined:0","ack":1,"data":null,"sockname":{"address":"::","family":"IPv6","port":18082},"seq":0}"#).unwrap();
        assert_eq!(reply, node);
        let conn = message(newconn("k"), 1);
        let node: Value =
            serde_json::from_str(r#"{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":1}"#)
                .unwrap();
        assert_eq!(conn, node);
    }

    #[test]
    fn unix_udp_and_bad_queries() {
        let q = Query::parse(&obj(
            json!({"address":"/tmp/s","port":-1,"addressType":-1,"readableAll":true,"index":0}),
        ))
        .unwrap();
        assert_eq!(q.target, Target::Unix("/tmp/s".into()));
        assert_eq!(q.key, "/tmp/s:-1:-1:undefined:0");
        assert_eq!(q.mode, Some(0o644));
        let q = Query::parse(&obj(
            json!({"address":"127.0.0.1","port":9,"addressType":"udp4"}),
        ))
        .unwrap();
        assert!(matches!(
            q.target,
            Target::Udp {
                port: 9,
                v6: false,
                ..
            }
        ));
        let q = Query::parse(&obj(json!({"fd":7,"addressType":4,"port":0}))).unwrap();
        assert_eq!(q.target, Target::Fd(7));
        for bad in [
            json!({"port":70000,"addressType":4}),
            json!({"port":"x","addressType":4}),
            json!({"port":1,"addressType":5}),
            json!({"port":-1,"addressType":-1}),
            json!({"port":1,"addressType":4,"address":3}),
        ] {
            assert!(Query::parse(&obj(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn errno_is_libuvs() {
        let e = std::io::Error::from_raw_os_error(98);
        assert_eq!(uv_errno(&e), -98);
        assert_eq!(uv_errno(&std::io::Error::other("x")), -22);
    }
}
