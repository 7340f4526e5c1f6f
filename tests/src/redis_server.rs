//! A private, non-persistent `redis-server` on a free loopback port, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{net, tools};

/// A running `redis-server` child (`--save "" --appendonly no`); killed and reaped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server --bind 127.0.0.1 --port <free>` and waits until it answers `PING`.
    pub async fn spawn() -> anyhow::Result<RedisServer> {
        let bin = tools::redis_server_bin()?;
        let mut last_err = None;
        for _ in 0..3 {
            let port = net::free_port()?;
            let child = spawn_on(&bin, port)?;
            let mut server = RedisServer {
                child: Some(child),
                port,
            };
            match server.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// The connection URL, `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server answers `PING` with `+PONG` right now.
    pub async fn ping(&self) -> bool {
        ping_port(self.port).await
    }

    /// Kills the server and waits (up to 10 s) until its port refuses connections.
    /// Idempotent; the port may then be taken by anyone.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = child.kill();
        child.wait().context("waiting for redis-server")?;
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("port {} still accepts connections after stop", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Every in-flight debit left (`x402:debits:*` hashes with a field; see
    /// `x402_settle::debits`): (hash key, fields). Empty once every settlement resolved.
    pub async fn debits_left(&self) -> Vec<(String, u64)> {
        let mut conn = redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("x402:debits:*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut left = Vec::new();
        for k in keys.into_iter().filter(|k| !k.ends_with(":seq")) {
            let n: u64 = redis::cmd("HLEN")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .expect("HLEN");
            if n > 0 {
                left.push((k, n));
            }
        }
        left
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as a Redis
    /// that hangs or is partitioned away.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a [`RedisServer::pause`]d server (SIGCONT), with its data.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("redis-server not running")?;
        let status = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} failed");
        Ok(())
    }

    /// Starts a new, empty server on the same port after [`RedisServer::stop`] and waits until
    /// it answers `PING`. Fails if the port was taken in between.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("redis-server on port {} is still running", self.port);
        }
        let bin = tools::redis_server_bin()?;
        self.child = Some(spawn_on(&bin, self.port)?);
        self.wait_ready(Duration::from_secs(10)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let child = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited early on port {}: {status}", self.port);
            }
            if ping_port(self.port).await && net::pid_listens_on(child.id(), self.port) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "redis-server on port {} not ready after {timeout:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_on(bin: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    Command::new(bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether something on 127.0.0.1:`port` answers a Redis `PING` with `+PONG` within 1 s.
pub async fn ping_port(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
