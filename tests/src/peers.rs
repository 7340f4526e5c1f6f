//! Running the official x402 SDK peers of `tests/peers` (node `@x402/*`, PyPI `x402`,
//! `x402-conformance`) as child processes against the facilitator under test.
//!
//! The peers are installed by `scripts/install-peers.sh`, run at most once per process by
//! [`ensure_installed`]. Every run has a timeout ([`PEER_TIMEOUT`] unless told otherwise); the
//! child is killed when it expires. [`PeerOutput`]'s `Display` shows the command, exit status,
//! stdout and stderr, for assertion messages.

use std::fmt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::tools::{repo_root, tools_dir};

/// Default time limit of one peer run.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// The peers folder (`<repo>/tests/peers`).
pub fn peers_dir() -> PathBuf {
    repo_root().join("tests/peers")
}

/// An executable of the peers' Python venv (`<repo>/.tools/venv/bin/<name>`).
pub fn venv_bin(name: &str) -> PathBuf {
    tools_dir().join("venv/bin").join(name)
}

/// Runs `scripts/install-peers.sh` once per process (it is idempotent and quick when nothing
/// changed). Later calls return the first outcome, the script's output included on failure.
pub fn ensure_installed() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn install() -> anyhow::Result<()> {
    let script = repo_root().join("scripts/install-peers.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for needed in [
        peers_dir().join("node_modules/@x402/core/package.json"),
        venv_bin("python"),
        venv_bin("x402conf"),
    ] {
        if !needed.exists() {
            bail!(
                "{} succeeded but {} is missing",
                script.display(),
                needed.display()
            );
        }
    }
    Ok(())
}

/// One peer command: program, arguments and environment, run in `tests/peers`.
#[derive(Debug, Clone)]
pub struct Peer {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    timeout: Duration,
}

impl Peer {
    /// `node <tests/peers/script>`.
    pub fn node(script: &str) -> Self {
        Peer::new("node").arg(peers_dir().join(script).to_string_lossy())
    }

    /// `<venv>/bin/python <tests/peers/script>`.
    pub fn python(script: &str) -> Self {
        Peer::new(venv_bin("python")).arg(peers_dir().join(script).to_string_lossy())
    }

    /// An executable of the peers' venv, e.g. `x402conf`.
    pub fn venv_tool(name: &str) -> Self {
        Peer::new(venv_bin(name))
    }

    /// Any program.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Peer {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            timeout: PEER_TIMEOUT,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Time limit of the run (default [`PEER_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        let mut line: Vec<String> = self
            .envs
            .iter()
            .filter(|(k, _)| k != "PAYER_KEY")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line.push(self.program.display().to_string());
        line.extend(self.args.iter().cloned());
        line.join(" ")
    }

    /// Installs the peers if needed, runs the command and collects its output. Errors: the
    /// install failed, the program could not be started, or the time limit expired (the child is
    /// killed; the message holds what it printed so far).
    pub async fn run(self) -> anyhow::Result<PeerOutput> {
        ensure_installed()?;
        let command = self.command_line();
        let started = Instant::now();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            // All peer traffic goes to loopback: never through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .current_dir(peers_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        let stdout = tokio::spawn(read_all(child.stdout.take().expect("piped stdout")));
        let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped stderr")));
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => Some(status.with_context(|| format!("waiting for {command}"))?),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        };
        let collect = |task: tokio::task::JoinHandle<String>| async move {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .map(|r| r.unwrap_or_default())
                .unwrap_or_else(|_| "<output not closed>".into())
        };
        let output = PeerOutput {
            command,
            status,
            stdout: collect(stdout).await,
            stderr: collect(stderr).await,
            elapsed: started.elapsed(),
        };
        if output.status.is_none() {
            bail!(
                "peer timed out after {:?} and was killed\n{output}",
                self.timeout
            );
        }
        Ok(output)
    }
}

async fn read_all(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut buf = Vec::new();
    let _ = pipe.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// What a finished peer run printed.
#[derive(Debug, Clone)]
pub struct PeerOutput {
    /// The command line (without secrets).
    pub command: String,
    /// Exit status; `None` when the run was killed at its time limit.
    pub status: Option<ExitStatus>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl PeerOutput {
    /// The exit code (None if killed by a signal or at the time limit).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Whether the peer exited 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// The peer's JSON answer: the last non-empty stdout line, parsed.
    pub fn json(&self) -> anyhow::Result<Value> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .with_context(|| format!("peer printed nothing on stdout\n{self}"))?;
        serde_json::from_str(line)
            .with_context(|| format!("peer stdout is not one JSON line\n{self}"))
    }
}

impl fmt::Display for PeerOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed at time limit".into(),
        };
        write!(
            f,
            "command: {}\nstatus: {status} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}
