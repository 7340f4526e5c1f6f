//! A latency-injecting TCP relay on 127.0.0.1: every byte read from one side is written to the
//! other side `delay` later (one-way latency, not a bandwidth limit: many chunks are in flight at
//! once). Put between the facilitator and its RPC node to act like a distant hosted RPC.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running relay; stops accepting (and drops its connections) on drop.
pub struct LatencyProxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on a free 127.0.0.1 port and relays each connection to `upstream` (a loopback
    /// address), delaying each direction by `delay`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> anyhow::Result<LatencyProxy> {
        anyhow::ensure!(
            upstream.ip().is_loopback(),
            "the relay only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the relay")?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, delay).await;
                    }
                });
                // Reap finished connections so the set stays small.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(LatencyProxy { addr, accept })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = one_way(client_read, server_write, delay);
    let down = one_way(server_read, client_write, delay);
    tokio::join!(up, down);
}

/// Copies `from` to `to`, each chunk `delay` after it was read; ends when `from` closes.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` lets the writer finish after the last chunk.
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_with_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let proxy = LatencyProxy::start(echo_addr, Duration::from_millis(30))
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        // Two one-way delays (no upper bound asserted: the machine may be busy).
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
