//! The real `x402-facilitator` binary as a child process (the demo, and the fault tests that
//! kill it with SIGKILL mid-settlement).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Numbers the config and log files of the processes this test process starts.
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The `x402-facilitator` binary of this build: next to the running executable (the demo) or
/// one folder up (a test binary in `deps/`). `scripts/test.sh` and `scripts/demo.sh` build it.
pub fn facilitator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidates = [
        exe.with_file_name("x402-facilitator"),
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("x402-facilitator"))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "x402-facilitator not found next to {}: run `cargo build -p x402-facilitator` \
                 (scripts/test.sh and scripts/demo.sh do)",
                exe.display()
            )
        })
}

/// The `x402-facilitator` binary running as a child process; killed on drop.
pub struct FacilitatorProcess {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    url: String,
}

impl FacilitatorProcess {
    /// Starts the binary next to this executable with `X402_CONFIG` pointing at `toml` (a
    /// harness config with `listen = "127.0.0.1:0"`) rewritten to a free port, and waits until
    /// `/health` answers 200. Retries on another port if the first one was taken meanwhile.
    /// `label` names its config and log files (`x402-demo-<label>-<pid>.{toml,log}` in the
    /// temporary directory).
    pub async fn start(label: &str, toml: &str) -> anyhow::Result<Self> {
        Self::start_with_env(label, toml, &[]).await
    }

    /// [`FacilitatorProcess::start`] with the extra environment variables `env` (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn start_with_env(
        label: &str,
        toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = facilitator_binary()?;
        let any_port = "listen = \"127.0.0.1:0\"";
        ensure!(
            toml.contains(any_port),
            "unexpected harness config:\n{toml}"
        );
        let mut last_err = None;
        for _ in 0..3 {
            let port = crate::net::free_port()?;
            let toml = toml.replace(any_port, &format!("listen = \"127.0.0.1:{port}\""));
            let mut process = Self::spawn(&bin, label, &toml, port, env)?;
            match process.wait_healthy(Duration::from_secs(20)).await {
                Ok(()) => return Ok(process),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn spawn(
        bin: &std::path::Path,
        label: &str,
        toml: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir();
        let stem = format!(
            "x402-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let config = dir.join(format!("{stem}.toml"));
        let log = dir.join(format!("{stem}.log"));
        std::fs::write(&config, toml)?;
        let mut cmd = Command::new(bin);
        // Only the generated file configures it: drop any X402_* override from our environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("X402_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let log_file = std::fs::File::create(&log)?;
        let child = cmd
            .env("X402_CONFIG", &config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(FacilitatorProcess {
            child,
            bin: bin.to_path_buf(),
            config,
            log,
            port,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("x402-facilitator exited ({status}):\n{}", self.log_text());
            }
            // Our process must own the port: never trust whoever else may have grabbed it.
            if crate::net::pid_listens_on(self.child.id(), self.port)
                && let Ok(resp) = reqwest::get(format!("{}/health", self.url)).await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("/health not 200 after {timeout:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the binary, its URL, config and log.
    pub fn describe(&self) {
        println!("  {} listening on {}", self.bin.display(), self.url);
        println!("  config {}", self.config.display());
        println!("  log    {} (kept if the demo fails)", self.log.display());
    }

    /// Stops the process and removes its log (all went well: only a failure's log is worth
    /// keeping).
    pub fn stop_and_clean(self) {
        let log = self.log.clone();
        drop(self);
        let _ = std::fs::remove_file(log);
    }

    /// Everything the process has logged so far (stdout and stderr; empty if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Kills the process and removes its config file (the log is kept).
impl Drop for FacilitatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl FacilitatorProcess {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SIGKILL, no shutdown of any kind (a crash).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// POSTs `body` to `path`: the HTTP status and JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        crate::facilitator::post_json(&self.url, path, body).await
    }
}
