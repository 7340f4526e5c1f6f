//! Multi-node Redis on 127.0.0.1 for the failover tests, from Debian's `redis-server` and
//! `redis-cli` (installed by `scripts/install-tools.sh`), every port a free one:
//! - [`RedisCluster`]: primaries and replicas with `cluster-enabled yes`, joined by
//!   `redis-cli --cluster create`, node timeout 1 s (a killed primary's replica is promoted in
//!   about 2 s); slots moved between primaries with `redis-cli --cluster reshard`;
//! - [`SentinelGroup`]: one primary, its replicas (`--replicaof`) and sentinels
//!   (`redis-server --sentinel`, quorum 2, down after 1 s).
//!
//! No persistence (`--save "" --appendonly no`): a restarted node is empty, as in the worst
//! case. Every process is killed and its directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::redis_server::ping_port;
use crate::{net, tools};

/// One `redis-server` process (data node or sentinel).
#[derive(Debug)]
pub struct RedisNode {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl RedisNode {
    /// Starts `redis-server <args> --port <free>` and waits until it answers `PING`.
    async fn spawn(make_args: impl Fn(u16) -> anyhow::Result<Vec<String>>) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = net::free_port()?;
            let args = make_args(port)?;
            let mut node = RedisNode {
                child: None,
                port,
                args,
            };
            match node.start().await {
                Ok(()) => return Ok(node),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("an attempt"))
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let bin = tools::redis_server_bin()?;
        let child = Command::new(bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server")?;
        let pid = child.id();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!("redis-server exited early on port {}: {status}", self.port);
            }
            if ping_port(self.port).await && net::pid_listens_on(pid, self.port) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server on port {} not ready", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: the node is gone with whatever it had not replicated.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again after [`RedisNode::kill9`], on the same port with the same
    /// arguments (empty: no persistence; a cluster node keeps its `nodes.conf` and rejoins).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "port {} still running", self.port);
        self.start().await
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`RedisNode::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("not running")?;
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill {sig} failed");
        Ok(())
    }

    /// Runs one command on this node (a short-lived connection), within 2 s.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let client = redis::Client::open(self.url())?;
        let call = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            cmd.query_async::<T>(&mut c).await
        };
        Ok(tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .context("redis command timed out")??)
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused node ignores SIGKILL until continued on some kernels: continue it first.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

/// A private directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("x402-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Arguments every data node gets: loopback, no persistence, immediate replica sync.
fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        "--protected-mode",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Redis Cluster: `primaries` primaries with `replicas` replicas each.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, in creation order (the first `primaries` were created as primaries).
    pub nodes: Vec<RedisNode>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create … --cluster-replicas
    /// <replicas>`, and waits until every node reports `cluster_state:ok` and every replica is
    /// in sync.
    pub async fn spawn(primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        let dir = TempDir::new("cluster")?;
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let d = dir.path().to_path_buf();
            nodes.push(
                RedisNode::spawn(move |port| {
                    let mut a = base_args(port, &d);
                    a.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            "1000",
                            "--cluster-require-full-coverage",
                            "no",
                            "--cluster-allow-reads-when-down",
                            "no",
                        ]
                        .iter()
                        .map(|s| s.to_string()),
                    );
                    Ok(a)
                })
                .await?,
            );
        }
        let cli = tools::redis_cli_bin()?;
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend([
            "--cluster-replicas".to_string(),
            replicas.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let out = tokio::process::Command::new(cli)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Seed URLs: every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Indexes (in [`RedisCluster::nodes`]) of the running nodes that are primaries now.
    pub async fn primaries(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            if let Ok(role) = n.cmd::<Vec<redis::Value>>(&redis::cmd("ROLE")).await
                && let Some(first) = role.first()
                && redis::from_redis_value::<String>(first.clone())
                    .ok()
                    .as_deref()
                    == Some("master")
            {
                out.push(i);
            }
        }
        out
    }

    /// Waits until every running node reports `cluster_state:ok` and sees no failed node other
    /// than killed ones, and every running replica's link is up.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let info: String = n
                    .cmd(redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .unwrap_or_default();
                let repl: String = n
                    .cmd(redis::cmd("INFO").arg("replication"))
                    .await
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok")
                    || (repl.contains("role:slave") && !repl.contains("master_link_status:up"))
                {
                    ok = false;
                }
            }
            if ok {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("cluster not healthy after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `[redis]` table of a facilitator on this cluster: `mode = "cluster"`, every node as
    /// a seed, and `min_replicas_acked` (replicas per primary that must hold a write before
    /// the facilitator acts on it).
    pub fn redis_toml(&self, min_replicas_acked: u32) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "[redis]\nmode = \"cluster\"\nurls = [{}]\nmin_replicas_acked = {min_replicas_acked}\n",
            urls.join(", ")
        )
    }

    /// Runs one command on the cluster, routed by its key like a client would (a short-lived
    /// cluster connection over every running node), within 5 s.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.url())
            .collect();
        let client = redis::cluster::ClusterClient::new(seeds)?;
        let call = async {
            let mut c = client.get_async_connection().await?;
            cmd.query_async::<T>(&mut c).await
        };
        Ok(tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .context("redis cluster command timed out")??)
    }

    /// Index of the running node serving `slot` as primary now.
    pub async fn primary_of_slot(&self, slot: u16) -> anyhow::Result<usize> {
        for i in self.primaries().await {
            if self.slots_of(i).await?.contains(&slot) {
                return Ok(i);
            }
        }
        bail!("no primary serves slot {slot}")
    }

    /// Indexes of the running nodes replicating primary `primary` (`INFO replication`:
    /// `master_port`).
    pub async fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let port = format!("master_port:{}", self.nodes[primary].port());
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if i == primary || !n.is_running() {
                continue;
            }
            let repl: String = n
                .cmd(redis::cmd("INFO").arg("replication"))
                .await
                .unwrap_or_default();
            if repl.contains("role:slave") && repl.lines().any(|l| l.trim() == port) {
                out.push(i);
            }
        }
        out
    }

    /// The cluster node id of node `i` (`CLUSTER MYID`).
    pub async fn node_id(&self, i: usize) -> anyhow::Result<String> {
        self.nodes[i].cmd(redis::cmd("CLUSTER").arg("MYID")).await
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of the first running node).
    pub async fn keyslot(&self, key: &str) -> anyhow::Result<u16> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .context("no running node")?;
        node.cmd(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
    }

    /// The slots node `i` serves now, ascending (its own line of `CLUSTER NODES`; slots being
    /// imported or migrated, `[…]`, are not counted).
    pub async fn slots_of(&self, i: usize) -> anyhow::Result<Vec<u16>> {
        let text: String = self.nodes[i]
            .cmd(redis::cmd("CLUSTER").arg("NODES"))
            .await?;
        let line = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|f| f.contains("myself"))
            })
            .context("CLUSTER NODES has no `myself` line")?;
        let mut slots = Vec::new();
        for range in line.split_whitespace().skip(8) {
            if range.starts_with('[') {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
            slots.extend(a..=b);
        }
        Ok(slots)
    }

    /// Moves `slots` hash slots, with their keys, from primary `from` to primary `to` (indexes
    /// in [`RedisCluster::nodes`]) with `redis-cli --cluster reshard` (non-interactive:
    /// `--cluster-from/--cluster-to/--cluster-slots/--cluster-yes`). redis-cli takes the
    /// source's lowest slots first. Fails when redis-cli fails or takes longer than `timeout`
    /// (it is killed then).
    pub async fn reshard(
        &self,
        from: usize,
        to: usize,
        slots: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (from_id, to_id) = (self.node_id(from).await?, self.node_id(to).await?);
        let cli = tools::redis_cli_bin()?;
        let run = tokio::process::Command::new(cli)
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.nodes[from].port()),
                "--cluster-from",
                &from_id,
                "--cluster-to",
                &to_id,
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, run)
            .await
            .with_context(|| {
                format!("redis-cli --cluster reshard still running after {timeout:?}")
            })?
            .context("redis-cli --cluster reshard")?;
        // redis-cli exits 0 on some failures: an error line starts with `[ERR]`.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.contains("[ERR]") {
            bail!(
                "redis-cli --cluster reshard failed ({}): {text}",
                out.status
            );
        }
        Ok(())
    }

    /// Waits until `count` running nodes are primaries and the cluster is ok (after a failover).
    pub async fn wait_primaries(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.primaries().await.len() < count {
            if start.elapsed() > timeout {
                bail!("fewer than {count} primaries after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_healthy(timeout.saturating_sub(start.elapsed()))
            .await
    }
}

/// A Sentinel group: a primary, its replicas, and sentinels monitoring it as
/// [`SentinelGroup::MASTER`].
#[derive(Debug)]
pub struct SentinelGroup {
    /// The data nodes: index 0 is the first primary.
    pub data: Vec<RedisNode>,
    /// The sentinels.
    pub sentinels: Vec<RedisNode>,
    _dir: TempDir,
}

impl SentinelGroup {
    /// The monitored group's name.
    pub const MASTER: &'static str = "x402";

    /// Starts 1 primary, `replicas` replicas and `sentinels` sentinels (quorum 2, down after
    /// 1 s, failover timeout 3 s), and waits until every sentinel knows every replica and the
    /// other sentinels.
    pub async fn spawn(replicas: usize, sentinels: usize) -> anyhow::Result<Self> {
        let dir = TempDir::new("sentinel")?;
        let d = dir.path().to_path_buf();
        let primary = RedisNode::spawn(|port| Ok(base_args(port, &d))).await?;
        let primary_port = primary.port();
        let mut data = vec![primary];
        for _ in 0..replicas {
            let d = dir.path().to_path_buf();
            data.push(
                RedisNode::spawn(move |port| {
                    let mut a = base_args(port, &d);
                    a.extend([
                        "--replicaof".to_string(),
                        "127.0.0.1".to_string(),
                        primary_port.to_string(),
                    ]);
                    Ok(a)
                })
                .await?,
            );
        }
        let mut sents = Vec::new();
        for i in 0..sentinels {
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            sents.push(
                RedisNode::spawn(|port| {
                    std::fs::write(
                        &conf,
                        format!(
                            "bind 127.0.0.1\nport {port}\nprotected-mode no\n\
                             sentinel monitor {m} 127.0.0.1 {primary_port} 2\n\
                             sentinel down-after-milliseconds {m} 1000\n\
                             sentinel failover-timeout {m} 3000\n\
                             sentinel parallel-syncs {m} 2\n",
                            m = Self::MASTER
                        ),
                    )?;
                    Ok(vec![conf.display().to_string(), "--sentinel".to_string()])
                })
                .await?,
            );
        }
        let group = SentinelGroup {
            data,
            sentinels: sents,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let mut ok = true;
            for s in &group.sentinels {
                let master: Vec<String> = s
                    .cmd(redis::cmd("SENTINEL").arg("MASTER").arg(Self::MASTER))
                    .await
                    .unwrap_or_default();
                let field = |name: &str| {
                    master
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| master.get(i + 1))
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0)
                };
                if field("num-slaves") < replicas || field("num-other-sentinels") + 1 < sentinels {
                    ok = false;
                }
            }
            for r in &group.data[1..] {
                let repl: String = r
                    .cmd(redis::cmd("INFO").arg("replication"))
                    .await
                    .unwrap_or_default();
                if !repl.contains("master_link_status:up") {
                    ok = false;
                }
            }
            if ok {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("sentinel group not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(group)
    }

    /// The sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.url()).collect()
    }

    /// Index (in [`SentinelGroup::data`]) of the node the sentinels name as primary now.
    pub async fn primary(&self) -> anyhow::Result<usize> {
        for s in self.sentinels.iter().filter(|s| s.is_running()) {
            if let Ok(addr) = s
                .cmd::<Vec<String>>(
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(Self::MASTER),
                )
                .await
                && let Some(port) = addr.get(1).and_then(|p| p.parse::<u16>().ok())
                && let Some(i) = self.data.iter().position(|n| n.port() == port)
            {
                return Ok(i);
            }
        }
        bail!("no sentinel names a primary")
    }

    /// Waits until the sentinels name a running node other than `old` as primary.
    pub async fn wait_failover(&self, old: usize, timeout: Duration) -> anyhow::Result<usize> {
        let start = Instant::now();
        loop {
            if let Ok(p) = self.primary().await
                && p != old
                && self.data[p].is_running()
            {
                let role: Vec<redis::Value> = self.data[p]
                    .cmd(&redis::cmd("ROLE"))
                    .await
                    .unwrap_or_default();
                if role
                    .first()
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    .as_deref()
                    == Some("master")
                {
                    return Ok(p);
                }
            }
            if start.elapsed() > timeout {
                bail!("no failover after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
