//! The registry's Solana part: one verifier and settler per configured cluster, their
//! `/supported` kinds (with `extra.feePayer`) and fee-payer signers.

use std::collections::HashMap;
use std::sync::Arc;

use solana_address::Address;
use x402_chain::{RpcSvmChain, SvmChain};
use x402_proto::{Network, SupportedKind};
use x402_settle::replay::ReplayStore;
use x402_settle::svm::{SvmFeeObserver, SvmSettleTiming, SvmSettler};
use x402_verify::svm::ExactSvmVerifier;

use crate::config::svm::SvmNetwork;
use crate::metrics::Metrics;

/// One configured Solana cluster.
pub struct SvmHandler {
    /// Checks payments and co-signs them.
    pub verifier: Arc<ExactSvmVerifier>,
    /// Sends and confirms them.
    pub settler: SvmSettler,
    /// Mints with their decimals.
    pub assets: Vec<(Address, u8)>,
}

/// The Solana handlers with what `/supported` says of them.
#[derive(Default)]
pub struct SvmPart {
    /// Handlers by CAIP-2 network.
    pub handlers: HashMap<Network, SvmHandler>,
    /// `/supported` kinds (v1 and v2), each with `extra.feePayer`.
    pub kinds: Vec<SupportedKind>,
    /// Fee-payer public keys (base58), for `signers["solana:*"]`.
    pub signers: Vec<String>,
}

/// Builds the handlers of `networks` over the agave RPC client, recording in `store` under
/// `prefix` and counting landed settlements' fees in `metrics`.
pub fn build(
    networks: Vec<SvmNetwork>,
    store: &Arc<dyn ReplayStore>,
    prefix: &str,
    timing: &SvmSettleTiming,
    metrics: &Metrics,
) -> SvmPart {
    let mut part = SvmPart::default();
    for net in networks {
        let chain: Arc<dyn SvmChain> = Arc::new(RpcSvmChain::new(&net.rpc_url, net.rpc_timeout));
        let verifier = Arc::new(ExactSvmVerifier::new(
            chain,
            net.network.clone(),
            net.fee_payers.clone(),
            net.assets.iter().map(|(m, _)| *m).collect(),
            net.policy.clone(),
        ));
        let settler = SvmSettler::new(verifier.clone(), store.clone(), prefix, timing.clone())
            .with_fee_observer(fee_metrics(metrics, &net.network));
        let fee_payer = verifier.fee_payer_addresses()[0].to_string();
        let extra = serde_json::json!({ "feePayer": fee_payer });
        if let Some(v1) = net.network.v1_name() {
            part.kinds.push(kind(1, v1, &extra));
        }
        part.kinds.push(kind(2, net.network.as_str(), &extra));
        for key in verifier.fee_payer_addresses() {
            let key = key.to_string();
            if !part.signers.contains(&key) {
                part.signers.push(key);
            }
        }
        part.handlers.insert(
            net.network.clone(),
            SvmHandler {
                verifier,
                settler,
                assets: net.assets,
            },
        );
    }
    part
}

fn kind(version: u8, network: &str, extra: &serde_json::Value) -> SupportedKind {
    SupportedKind {
        x402_version: version,
        scheme: "exact".into(),
        network: network.into(),
        extra: Some(extra.clone()),
    }
}

/// Counts the fees and rent of landed settlements on `network`.
fn fee_metrics(metrics: &Metrics, network: &Network) -> SvmFeeObserver {
    let label = [network.as_str()];
    let fee = metrics.svm_fee_lamports_total.with_label_values(&label);
    let rent = metrics.svm_rent_lamports_total.with_label_values(&label);
    let usdc = metrics.gas_usdc_total.with_label_values(&label);
    let quoted = metrics.gas_quoted_usdc_total.with_label_values(&label);
    Arc::new(move |paid| {
        fee.inc_by(paid.fee_lamports);
        rent.inc_by(paid.rent_lamports);
        if let Some(in_usdc) = paid.usdc {
            usdc.inc_by(in_usdc.actual);
            quoted.inc_by(in_usdc.quoted);
        }
    })
}
