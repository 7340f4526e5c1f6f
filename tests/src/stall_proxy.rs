//! A TCP relay on 127.0.0.1 in front of a real endpoint (anvil) that can be switched to stall:
//! it keeps accepting connections and reading requests but forwards nothing and answers
//! nothing, as an RPC node that hangs. For the deadline and failover tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; stops accepting when dropped.
pub struct StallProxy {
    url: String,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Relays 127.0.0.1:<free port> to `target` (`host:port`), forwarding at first.
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stalled = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        let flag = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target.clone(), flag.clone()));
            }
        });
        Ok(StallProxy { url, stalled, task })
    }

    /// The relay's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stall (true) or forward (false), on new and open connections alike.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways chunk by chunk; while stalled, holds every chunk (reads, never writes).
async fn relay(mut inbound: TcpStream, target: String, stalled: Arc<AtomicBool>) {
    let Ok(mut outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut ri, mut wi) = inbound.split();
    let (mut ro, mut wo) = outbound.split();
    let up = pump(&mut ri, &mut wo, &stalled);
    let down = pump(&mut ro, &mut wi, &stalled);
    let _ = tokio::join!(up, down);
}

async fn pump<R, W>(r: &mut R, w: &mut W, stalled: &AtomicBool) -> std::io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w.write_all(&buf[..n]).await?;
    }
}
