//! Compiles the project's own test contracts (`tests/contracts/*.sol`) at test time with npm
//! `solc` (the wasm build `scripts/install-tools.sh` installs into `.tools/solc`; no download
//! at test time), through `node`.

use std::io::Write;
use std::process::{Command, Stdio};

use alloy::primitives::Bytes;
use anyhow::{Context, bail};
use serde::Deserialize;

use crate::tools::{ensure_installed, repo_root, tools_dir};

/// One compiled contract.
#[derive(Debug, Clone, Deserialize)]
pub struct Compiled {
    /// Creation bytecode (append ABI-encoded constructor arguments to deploy).
    pub bytecode: Bytes,
    /// Runtime bytecode (for `anvil_setCode`).
    #[serde(rename = "deployedBytecode")]
    pub deployed_bytecode: Bytes,
}

const COMPILE: &str = r#"
const fs = require("fs");
const solc = require(process.env.SOLC);
const file = process.env.FILE, name = process.env.CONTRACT;
const input = {
    language: "Solidity",
    sources: { [file]: { content: fs.readFileSync(file, "utf8") } },
    settings: { optimizer: { enabled: true, runs: 200 },
                outputSelection: { "*": { "*": ["evm.bytecode.object", "evm.deployedBytecode.object"] } } },
};
const res = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (res.errors || []).filter((e) => e.severity === "error");
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join("\n")); process.exit(1); }
const c = res.contracts[file][name];
if (!c) { console.error("no contract " + name + " in " + file); process.exit(1); }
process.stdout.write(JSON.stringify({ bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object }));
"#;

/// Compiles contract `name` of `tests/contracts/{file}`.
pub fn compile(file: &str, name: &str) -> anyhow::Result<Compiled> {
    ensure_installed()?;
    let solc = tools_dir().join("solc/node_modules/solc");
    let path = repo_root().join("tests/contracts").join(file);
    let mut child = Command::new("node")
        .arg("-")
        .env("SOLC", &solc)
        .env("FILE", &path)
        .env("CONTRACT", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("node (needed to compile test contracts with npm solc)")?;
    child
        .stdin
        .take()
        .context("node stdin")?
        .write_all(COMPILE.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "solc failed on {name} of {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("solc output")
}
