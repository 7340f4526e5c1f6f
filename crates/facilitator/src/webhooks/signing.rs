//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the secret's bytes (the secret is
//! written `whsec_` + base64, 24 to 64 bytes; that format is the configuration's, see
//! [`crate::config::webhooks`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::config::webhooks::{SECRET_PREFIX, decode_secret, generate_secret};

/// The `webhook-signature` value of `body` sent as event `id` at Unix seconds `timestamp`:
/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn standard_webhooks_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = generate_secret().unwrap();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(decode_secret(&secret).unwrap().len(), 32);
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err());
    }
}
