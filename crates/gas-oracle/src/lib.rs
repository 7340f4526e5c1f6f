//! Gas oracle: prices settlement gas (and Solana rent) in atomic USDC so that quotes include it.
//!
//! Empty in this release; the cost models, price sources, quotes and requirements builder come
//! with the gas-oracle issue. The crate exists so that the workspace has its final shape.
