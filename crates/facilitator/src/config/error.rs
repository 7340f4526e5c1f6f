//! [`ConfigError`]: every configuration error names the key it is about.

/// A configuration error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    /// Dotted key path (e.g. `evm[0].assets[1].address`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The error of `key`: `message`.
pub(super) fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}
