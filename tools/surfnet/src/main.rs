//! `x402-surfnet`: an offline Solana JSON-RPC server on loopback, for tests.
//!
//! Runs surfpool's simnet (an SVM with the SPL Token, Token-2022, Associated Token Account and Memo
//! programs) with no remote datasource, binds `127.0.0.1:<--rpc-port>` (HTTP JSON-RPC) and
//! `127.0.0.1:<--ws-port>` (PubSub), prints `ready` on stdout once it answers, and runs until killed.
//! Cheat codes `surfnet_setAccount` / `surfnet_setTokenAccount` plant mints and token balances.

use std::net::TcpListener;

use clap::Parser;
use surfpool_core::{start_local_surfnet, surfnet::svm::SurfnetSvm};
use surfpool_types::{RpcConfig, SimnetConfig, SimnetEvent, SurfpoolConfig};

/// Command line of the test RPC server.
#[derive(Parser)]
struct Args {
    /// HTTP JSON-RPC port on 127.0.0.1.
    #[arg(long)]
    rpc_port: u16,
    /// WebSocket PubSub port on 127.0.0.1.
    #[arg(long)]
    ws_port: u16,
    /// Slot time in milliseconds.
    #[arg(long, default_value_t = 400)]
    slot_time_ms: u64,
}

/// A port the OS says is free now (for the gossip/TPU ports the simnet wants but tests never use).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = SurfpoolConfig {
        simnets: vec![SimnetConfig {
            offline_mode: true,
            remote_rpc_url: None,
            slot_time: args.slot_time_ms,
            ..SimnetConfig::default()
        }],
        rpc: RpcConfig {
            bind_host: "127.0.0.1".to_string(),
            bind_port: args.rpc_port,
            ws_port: args.ws_port,
            gossip_port: free_port()?,
            tpu_port: free_port()?,
            tpu_quic_port: free_port()?,
        },
        ..SurfpoolConfig::default()
    };
    let (svm, events, geyser) = SurfnetSvm::default();
    let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
    let runloop = std::thread::spawn(move || {
        let run = start_local_surfnet(svm, config, commands_tx, commands_rx, geyser);
        if let Err(e) = hiro_system_kit::nestable_block_on(run) {
            eprintln!("surfnet stopped: {e}");
            std::process::exit(1);
        }
    });
    for event in events.iter() {
        match event {
            SimnetEvent::CoreStarted(_) => println!("ready"),
            SimnetEvent::Aborted(why) => return Err(why.into()),
            SimnetEvent::Shutdown => break,
            SimnetEvent::ErrorLog(_, message) => eprintln!("error: {message}"),
            _ => {}
        }
    }
    runloop.join().map_err(|_| "surfnet runloop panicked")?;
    Ok(())
}
