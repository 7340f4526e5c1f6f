//! Loopback port helpers shared by the process wrappers.

use std::collections::HashSet;
use std::net::TcpListener;

use anyhow::Context;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether process `pid` holds the listening TCP socket on `port` (Linux: matches the socket
/// inodes of `/proc/<pid>/fd` with `/proc/net/tcp`). Guards against talking to another test's
/// server that grabbed the same port. Always `true` where `/proc` is unavailable.
pub fn pid_listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return !std::path::Path::new("/proc/self/fd").exists();
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let port_hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 9
                    && cols[1].ends_with(&port_hex)
                    && cols[3] == "0A"
                    && inodes.contains(cols[9])
            })
    })
}
