//! Webhook signatures: HMAC-SHA256 of the exact request body, keyed with the
//! webhook's secret, sent as `X-Hopwatch-Signature: sha256=<lowercase hex>`
//! (the scheme GitHub's webhooks made familiar), so a receiver can check that
//! an alert came from this hopwatch and was not altered.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::Secret;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Hopwatch-Signature";
/// The header carrying the event id, for receivers to drop duplicates.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first).
    HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length")
}

/// The header value for `body`: `sha256=` and the hex HMAC.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` (compared in constant time).
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let secret = Secret::new("Jefe");
        let body = b"what do ya want for nothing?";
        assert_eq!(
            signature(&secret, body),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(&secret, body, &signature(&secret, body)));
    }

    #[test]
    fn altered_bodies_and_other_keys_fail() {
        let secret = Secret::new("k");
        let sig = signature(&secret, b"{\"a\":1}");
        assert!(!verify(&secret, b"{\"a\":2}", &sig));
        assert!(!verify(&Secret::new("other"), b"{\"a\":1}", &sig));
        assert!(!verify(&secret, b"{\"a\":1}", "md5=00"));
        assert!(!verify(&secret, b"{\"a\":1}", "sha256=zz"));
    }
}
