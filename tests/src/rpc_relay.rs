//! A JSON-RPC relay on 127.0.0.1 in front of a real node (anvil): an HTTP/1.1 listener that
//! accepts `POST` on any path (so the facilitator can be given a hosted-style URL such as
//! `http://127.0.0.1:PORT/v3/TOKEN?apikey=TOKEN`) and forwards each request's body to the node.
//! It can stall (keep reading, never answer) every request or only some JSON-RPC methods, and
//! it can close: stop listening and drop every open connection, so that connections are refused.
//! For the fault and redaction tests.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the relay does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMode {
    /// Forward it and answer with the node's answer.
    Forward,
    /// Answer nothing, ever (the connection stays open).
    Stall,
    /// Stall requests of these JSON-RPC methods, forward the others.
    StallMethods(Vec<String>),
}

/// A running relay; closed when dropped.
pub struct RpcRelay {
    port: u16,
    mode: Arc<Mutex<RelayMode>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl RpcRelay {
    /// Relays 127.0.0.1:<free port> to the node at `target` (an `http://` URL), forwarding.
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(Mutex::new(RelayMode::Forward));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (target, m, t) = (target.to_string(), mode.clone(), tasks.clone());
        tasks.lock().unwrap().spawn(async move {
            let client = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                let serve = serve(conn, client.clone(), target.clone(), m.clone());
                t.lock().unwrap().spawn(serve);
            }
        });
        Ok(RpcRelay { port, mode, tasks })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` followed by `path_and_query` (e.g. `/v3/TOKEN?apikey=TOKEN`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    /// Changes what it does with requests from now on (requests already stalled stay so).
    pub fn set_mode(&self, mode: RelayMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stops listening and drops every open connection: from now on connections are refused.
    pub fn close(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for RpcRelay {
    fn drop(&mut self) {
        self.close();
    }
}

/// Serves one connection: request after request (keep-alive) until the client closes it.
async fn serve(
    mut conn: TcpStream,
    client: reqwest::Client,
    target: String,
    mode: Arc<Mutex<RelayMode>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        let stall = match &*mode.lock().unwrap() {
            RelayMode::Forward => false,
            RelayMode::Stall => true,
            RelayMode::StallMethods(methods) => methods.contains(&method_of(&body)),
        };
        if stall {
            // Keep reading (so the client sees an open, silent connection), never answer.
            let mut sink = [0u8; 4096];
            while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        let answer = match client
            .post(&target)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap_or_default();
                (status, bytes.to_vec())
            }
            Err(_) => (502, b"bad gateway".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.0,
            answer.1.len()
        );
        if conn.write_all(head.as_bytes()).await.is_err()
            || conn.write_all(&answer.1).await.is_err()
        {
            return;
        }
    }
}

/// Reads one HTTP/1.1 request with a `content-length` body from `conn` (`buf` keeps bytes of
/// the next one); `None` when the connection ends.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[header_end..header_end + length].to_vec();
    buf.drain(..header_end + length);
    Some(body)
}

/// The JSON-RPC `method` of a request body (the first one of a batch).
fn method_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let call = if value.is_array() { &value[0] } else { &value };
    call["method"].as_str().unwrap_or_default().to_string()
}
