//! One Redis connection for the three deployments `[redis] mode` names: a single node
//! (`single`), a Sentinel group (`sentinel`: the sentinels name the primary, the client follows
//! a failover) and Redis Cluster (`cluster`: MOVED/ASK redirects and failovers handled by the
//! `redis` crate's cluster client). [`RedisConn`] implements the crate's
//! [`redis::aio::ConnectionLike`], so commands, pipelines and Lua scripts run unchanged on any
//! of them; every call is bounded by the configured deadline (`[settle] redis_timeout_ms`),
//! whatever the client does inside (reconnects, redirects, a Sentinel lookup).
//!
//! On a cluster every script's keys must share one hash slot: the key layout
//! ([`crate::replay::keys`]) puts them under one hash tag. `rediss://` URLs connect with TLS
//! (rustls, the platform's root certificates); an ACL user and password given apart from the
//! URLs ([`RedisTarget::username`], [`RedisTarget::password`]) apply to every data node (and,
//! in `sentinel` mode, to the sentinels too unless their URLs carry their own).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, Value,
};

use crate::store_error::StoreError;

/// How Redis is deployed (`[redis] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// One node (`url`, or the one entry of `urls`).
    #[default]
    Single,
    /// A Sentinel group: `urls` are the sentinels, `sentinel_master` the group's name.
    Sentinel,
    /// Redis Cluster: `urls` are seed nodes (any of them; the client learns the rest).
    Cluster,
}

impl RedisMode {
    /// `single`, `sentinel` or `cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// Where Redis is and how to reach it.
#[derive(Clone)]
pub struct RedisTarget {
    /// The deployment.
    pub mode: RedisMode,
    /// `redis://` or `rediss://` URLs: the node (`single`), the sentinels (`sentinel`) or the
    /// cluster's seed nodes (`cluster`).
    pub urls: Vec<String>,
    /// The Sentinel group's primary name (`sentinel` mode only).
    pub sentinel_master: Option<String>,
    /// ACL user of the data nodes (overrides one in the URLs), e.g. from `X402_REDIS_USERNAME`.
    pub username: Option<String>,
    /// Password of the data nodes (overrides one in the URLs), e.g. from `X402_REDIS_PASSWORD`.
    pub password: Option<String>,
    /// Deadline of every call (connects, redirects and failover lookups included).
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("mode", &self.mode)
            .field("nodes", &self.urls.len())
            .field("sentinel_master", &self.sentinel_master)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisTarget {
    /// A single node at `url` with deadline `timeout` (tests, tools).
    pub fn single(url: &str, timeout: Duration) -> Self {
        RedisTarget {
            mode: RedisMode::Single,
            urls: vec![url.to_string()],
            sentinel_master: None,
            username: None,
            password: None,
            timeout,
        }
    }

    /// The same target with another deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `url` parsed, with the configured user and password applied. Errors name the URL's
    /// position (never its text: it may carry a password).
    fn info(&self, index: usize, url: &str) -> Result<ConnectionInfo, StoreError> {
        let info = url.into_connection_info().map_err(|e| {
            StoreError::Unavailable(format!("redis: urls[{index}] is not a Redis URL: {e}"))
        })?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        Ok(info.set_redis_settings(settings))
    }
}

/// A connection to Redis in any [`RedisMode`]; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
    timeout: Duration,
    mode: RedisMode,
    urls: Arc<Vec<String>>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(Arc<ClusterConn>),
    Sentinel(Arc<SentinelConn>),
}

/// The cluster connection, rebuilt (a fresh slot map from the seed nodes) after a timeout or
/// a connection error: the client's own refresh can stay stuck on a primary that was killed.
struct ClusterConn {
    client: redis::cluster::ClusterClient,
    current: Mutex<Option<ClusterConnection>>,
    rebuild: tokio::sync::Mutex<()>,
}

impl ClusterConn {
    async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        if let Some(c) = self
            .current
            .lock()
            .expect("cluster connection lock")
            .clone()
        {
            return Ok(c);
        }
        let _one = self.rebuild.lock().await;
        if let Some(c) = self
            .current
            .lock()
            .expect("cluster connection lock")
            .clone()
        {
            return Ok(c);
        }
        let conn = self.client.get_async_connection().await?;
        *self.current.lock().expect("cluster connection lock") = Some(conn.clone());
        Ok(conn)
    }

    fn after(&self, error: &RedisError) {
        use redis::ServerErrorKind as S;
        if moved_or_gone(error)
            || matches!(
                error.kind(),
                redis::ErrorKind::Server(S::ClusterDown | S::TryAgain)
            )
        {
            self.forget();
        }
    }

    fn forget(&self) {
        *self.current.lock().expect("cluster connection lock") = None;
    }
}

/// The primary named by the sentinels, looked up again after any connection error or
/// `READONLY` answer (the old primary demoted by a failover).
struct SentinelConn {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self
            .current
            .lock()
            .expect("sentinel connection lock")
            .clone()
        {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        if let Some(c) = self
            .current
            .lock()
            .expect("sentinel connection lock")
            .clone()
        {
            return Ok(c);
        }
        let primary = client.async_get_client().await?;
        let conn = primary
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().expect("sentinel connection lock") = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the primary after an error that may mean it moved.
    fn after(&self, error: &RedisError) {
        if moved_or_gone(error) {
            *self.current.lock().expect("sentinel connection lock") = None;
        }
    }

    fn forget(&self) {
        *self.current.lock().expect("sentinel connection lock") = None;
    }
}

/// Whether `e` may mean the node is no longer the primary (or no longer there).
fn moved_or_gone(e: &RedisError) -> bool {
    use redis::ServerErrorKind as S;
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(S::ReadOnly | S::MasterDown | S::BusyLoading)
        )
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisConn {
    /// Connects to `target` within its deadline. Errors: a malformed URL, a missing
    /// `sentinel_master` in `sentinel` mode, or no answer within the deadline.
    pub async fn connect(target: &RedisTarget) -> Result<Self, StoreError> {
        let timeout = target.timeout;
        if target.urls.is_empty() {
            return Err(StoreError::Unavailable("redis: no URL configured".into()));
        }
        let inner = tokio::time::timeout(timeout, Self::open(target))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("redis: no answer within {timeout:?}"))
            })??;
        Ok(RedisConn {
            inner,
            timeout,
            mode: target.mode,
            urls: Arc::new(target.urls.clone()),
        })
    }

    async fn open(target: &RedisTarget) -> Result<Inner, StoreError> {
        let timeout = target.timeout;
        let infos = target
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| target.info(i, u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match target.mode {
            RedisMode::Single => {
                let client = redis::Client::open(infos[0].clone()).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Inner::Single(
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(unavailable)?,
                )
            }
            RedisMode::Cluster => {
                let mut builder = ClusterClientBuilder::new(infos);
                if let Some(u) = &target.username {
                    builder = builder.username(u);
                }
                if let Some(p) = &target.password {
                    builder = builder.password(p);
                }
                let client = builder
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()
                    .map_err(unavailable)?;
                let conn = ClusterConn {
                    client,
                    current: Mutex::new(None),
                    rebuild: tokio::sync::Mutex::new(()),
                };
                conn.connection().await.map_err(unavailable)?;
                Inner::Cluster(Arc::new(conn))
            }
            RedisMode::Sentinel => {
                let master = target.sentinel_master.clone().ok_or_else(|| {
                    StoreError::Unavailable("redis: sentinel mode needs sentinel_master".into())
                })?;
                // The data nodes' credentials; the sentinels use what their URLs carry.
                let mut node = redis::RedisConnectionInfo::default();
                if let Some(u) = &target.username {
                    node = node.set_username(u);
                }
                if let Some(p) = &target.password {
                    node = node.set_password(p);
                }
                let mut node_info =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
                if target.urls.iter().any(|u| u.starts_with("rediss://")) {
                    node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinels: Vec<ConnectionInfo> = target
                    .urls
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        u.as_str().into_connection_info().map_err(|e| {
                            StoreError::Unavailable(format!(
                                "redis: urls[{i}] is not a Redis URL: {e}"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let client = SentinelClient::build(
                    sentinels,
                    master,
                    Some(node_info),
                    SentinelServerType::Master,
                )
                .map_err(unavailable)?;
                let conn = SentinelConn {
                    client: tokio::sync::Mutex::new(client),
                    current: Mutex::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                };
                conn.connection().await.map_err(unavailable)?;
                Inner::Sentinel(Arc::new(conn))
            }
        })
    }

    /// The deployment this connection speaks to.
    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same connection with another deadline (e.g. the rate limiter's shorter one).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn deadline_passed(&self) -> RedisError {
        match &self.inner {
            Inner::Sentinel(s) => s.forget(),
            Inner::Cluster(c) => c.forget(),
            Inner::Single(_) => {}
        }
        RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {:?}", self.timeout),
        ))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let timeout = self.timeout;
            let call = async {
                match &mut self.inner {
                    Inner::Single(c) => c.req_packed_command(cmd).await,
                    Inner::Cluster(k) => {
                        let mut c = k.connection().await.inspect_err(|e| k.after(e))?;
                        c.req_packed_command(cmd).await.inspect_err(|e| k.after(e))
                    }
                    Inner::Sentinel(s) => {
                        let mut c = s.connection().await.inspect_err(|e| s.after(e))?;
                        c.req_packed_command(cmd).await.inspect_err(|e| s.after(e))
                    }
                }
            };
            let answer = tokio::time::timeout(timeout, call).await;
            answer.unwrap_or_else(|_| Err(self.deadline_passed()))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let timeout = self.timeout;
            let call = async {
                match &mut self.inner {
                    Inner::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
                    Inner::Cluster(k) => {
                        let mut c = k.connection().await.inspect_err(|e| k.after(e))?;
                        c.req_packed_commands(pipeline, offset, count)
                            .await
                            .inspect_err(|e| k.after(e))
                    }
                    Inner::Sentinel(s) => {
                        let mut c = s.connection().await.inspect_err(|e| s.after(e))?;
                        c.req_packed_commands(pipeline, offset, count)
                            .await
                            .inspect_err(|e| s.after(e))
                    }
                }
            };
            let answer = tokio::time::timeout(timeout, call).await;
            answer.unwrap_or_else(|_| Err(self.deadline_passed()))
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(_) => 0,
            Inner::Sentinel(_) => 0,
        }
    }
}

/// One Redis node as seen from this process (readiness, metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// `host:port`.
    pub address: String,
    /// `primary`, `replica`, `sentinel`, or `unknown` (unreachable before its role was read).
    pub role: String,
    /// Whether the node answers (a replica: linked to its primary and online).
    pub reachable: bool,
}

/// `host:port` of `url` (never its credentials).
fn address_of(url: &str) -> String {
    match url.into_connection_info().map(|i| i.addr().clone()) {
        Ok(redis::ConnectionAddr::Tcp(h, p))
        | Ok(redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        }) => {
            format!("{h}:{p}")
        }
        Ok(redis::ConnectionAddr::Unix(path)) => path.display().to_string(),
        _ => "?".to_string(),
    }
}

/// The replicas named by a primary's `INFO replication` (`slaveN:ip=…,port=…,state=online,…`).
fn replicas_in_info(info: &str) -> Vec<NodeStatus> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("ip="))
        .filter_map(|l| {
            let (_, fields) = l.split_once(':')?;
            let get = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            };
            Some(NodeStatus {
                address: format!("{}:{}", get("ip")?, get("port")?),
                role: "replica".into(),
                reachable: get("state") == Some("online"),
            })
        })
        .collect()
}

/// The nodes of `CLUSTER NODES` (`id addr flags master ping pong epoch link slots…`).
fn nodes_in_cluster(text: &str) -> Vec<NodeStatus> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let address = f[1].split(['@', ',']).next()?.to_string();
            let flags = f[2];
            let role = if flags.contains("master") {
                "primary"
            } else if flags.contains("slave") {
                "replica"
            } else {
                "unknown"
            };
            Some(NodeStatus {
                address,
                role: role.into(),
                reachable: f[7] == "connected" && !flags.contains("fail"),
            })
        })
        .collect()
}

impl RedisConn {
    /// Every node this deployment has and whether it answers: the node and its replicas
    /// (single), the primary, its replicas and each sentinel (sentinel), every cluster node
    /// (cluster, as `CLUSTER NODES` reports them). Each read within the deadline; an
    /// unreachable primary is reported as such, never an error.
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        let urls = self.urls.as_slice();
        let mut conn = self.clone();
        match self.mode {
            RedisMode::Cluster => {
                match redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async::<String>(&mut conn)
                    .await
                {
                    Ok(text) => nodes_in_cluster(&text),
                    Err(_) => urls
                        .iter()
                        .map(|u| NodeStatus {
                            address: address_of(u),
                            role: "unknown".into(),
                            reachable: false,
                        })
                        .collect(),
                }
            }
            RedisMode::Single | RedisMode::Sentinel => {
                let role = redis::cmd("ROLE")
                    .query_async::<Vec<redis::Value>>(&mut conn)
                    .await
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|v| redis::from_redis_value::<String>(v).ok());
                let info = redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut conn)
                    .await
                    .unwrap_or_default();
                let address = match self.mode {
                    RedisMode::Single => urls.first().map(|u| address_of(u)).unwrap_or_default(),
                    _ => "primary".to_string(),
                };
                let mut out = vec![NodeStatus {
                    address,
                    role: match role.as_deref() {
                        Some("master") => "primary",
                        Some("slave") => "replica",
                        _ => "unknown",
                    }
                    .into(),
                    reachable: role.is_some(),
                }];
                out.extend(replicas_in_info(&info));
                if self.mode == RedisMode::Sentinel {
                    for url in urls {
                        let reachable = match redis::Client::open(url.as_str()) {
                            Ok(c) => tokio::time::timeout(self.timeout, async {
                                let mut s = c.get_multiplexed_async_connection().await?;
                                redis::cmd("PING").query_async::<String>(&mut s).await
                            })
                            .await
                            .is_ok_and(|r| r.is_ok()),
                            Err(_) => false,
                        };
                        out.push(NodeStatus {
                            address: address_of(url),
                            role: "sentinel".into(),
                            reachable,
                        });
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replicas_and_cluster_nodes() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=10,lag=0\r\nslave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=1\r\n";
        let r = replicas_in_info(info);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].address, "127.0.0.1:7001");
        assert!(r[0].reachable && !r[1].reachable);
        let nodes = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\nb2 127.0.0.1:7003@17003 slave a1 0 0 1 connected\nc3 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected\n";
        let n = nodes_in_cluster(nodes);
        assert_eq!(n.len(), 3);
        assert_eq!((n[0].role.as_str(), n[0].reachable), ("primary", true));
        assert_eq!((n[1].role.as_str(), n[1].reachable), ("replica", true));
        assert!(!n[2].reachable);
        assert_eq!(
            address_of("redis://:secret@10.1.2.3:6380/0"),
            "10.1.2.3:6380"
        );
    }
}
