//! Alipay OpenAPI RSA2 (providers.md §4.2–4.3): requests signed with the app's private key
//! over the sorted, raw `k=v` pairs; answers verified with Alipay's public key over the exact
//! text of their response node.

use std::collections::BTreeMap;

use base64::Engine;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::rand_core::OsRng;
use rsa::sha2::Sha256;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The smallest key taken, in bytes (2048 bits, as Alipay's key tool makes them).
const MIN_KEY_BYTES: usize = 256;

/// The content a request's signature covers: every parameter but `sign` and the empty ones,
/// sorted by key, as raw (not URL-encoded) `k=v` pairs joined with `&`.
pub(crate) fn sign_content(params: &BTreeMap<&str, String>) -> String {
    params
        .iter()
        .filter(|(k, v)| **k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `base64(SHA256withRSA(key, content))`, the private operation blinded; `None` if the key
/// cannot sign (it is checked when the channel is configured, so this is not expected).
pub(crate) fn sign(key: &RsaPrivateKey, content: &str) -> Option<String> {
    let signature = SigningKey::<Sha256>::new(key.clone())
        .try_sign_with_rng(&mut OsRng, content.as_bytes())
        .ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
}

/// Whether `signature` (base64) is `key`'s SHA256withRSA signature of `content`.
pub(crate) fn verify(key: &RsaPublicKey, content: &str, signature: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(content.as_bytes(), &signature)
        .is_ok()
}

/// The DER inside a PEM text, or the text itself as base64 DER (how Alipay's key tool hands
/// keys out: one base64 line, no header).
fn der_of(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// An app private key of at least 2048 bits, PKCS#8 (PEM, or base64 DER).
pub(crate) fn private_key(text: &str) -> Option<RsaPrivateKey> {
    RsaPrivateKey::from_pkcs8_der(&der_of(text)?)
        .ok()
        .filter(|k| k.size() >= MIN_KEY_BYTES)
}

/// A public key of at least 2048 bits, SubjectPublicKeyInfo (PEM, or base64 DER).
pub(crate) fn public_key(text: &str) -> Option<RsaPublicKey> {
    RsaPublicKey::from_public_key_der(&der_of(text)?)
        .ok()
        .filter(|k| k.size() >= MIN_KEY_BYTES)
}

/// The exact text of the JSON object under `"node":` in `body`, found by matching braces (the
/// signature covers those bytes, not a re-serialisation). `None` when the node is absent, is
/// no object, or its name appears twice (a forged answer could carry two).
pub(crate) fn response_node<'a>(body: &'a str, node: &str) -> Option<&'a str> {
    let key = format!("\"{node}\"");
    let at = body.find(&key)?;
    if body[at + key.len()..].contains(&key) {
        return None;
    }
    let rest = body[at + key.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in rest.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return rest.get(..=i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A throwaway 2048-bit test key, PKCS#8.
    const TEST_KEY: &str = include_str!("test_key.pem");

    #[test]
    fn the_signed_content_is_the_sorted_raw_pairs_without_sign_and_empty_values() {
        let params: BTreeMap<&str, String> = [
            ("method", "alipay.open.public.message.single.send"),
            ("app_id", "2021005151000001"),
            ("sign", "ignored"),
            ("notify_url", ""),
            ("timestamp", "2026-12-02 10:00:00"),
            ("biz_content", "{\"to_user_id\":\"2088\",\"a\":\"b c&d\"}"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert_eq!(
            sign_content(&params),
            "app_id=2021005151000001&biz_content={\"to_user_id\":\"2088\",\"a\":\"b c&d\"}&charset=utf-8\
             &method=alipay.open.public.message.single.send&sign_type=RSA2&timestamp=2026-12-02 10:00:00"
        );
    }

    #[test]
    fn signatures_verify_with_the_matching_public_key_only() {
        let key = private_key(TEST_KEY).unwrap();
        let public = RsaPublicKey::from(&key);
        let signature = sign(&key, "a=1&b=中文").unwrap();
        assert!(verify(&public, "a=1&b=中文", &signature));
        assert!(!verify(&public, "a=1&b=2", &signature));
        assert!(!verify(&public, "a=1&b=中文", "bm90IGEgc2lnbmF0dXJl"));
        assert!(!verify(&public, "a=1&b=中文", "%%%"));
        // The same key as one base64 line, as Alipay's tool gives it.
        let line: String = TEST_KEY
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(private_key(&line).unwrap(), key);
        assert!(private_key("not a key").is_none());
        // A key too short to trust is refused.
        assert!(private_key(include_str!("short_key.pem")).is_none());
    }

    #[test]
    fn the_response_node_is_cut_by_matching_braces() {
        let body = r#"{"alipay_x_response":{"code":"10000","msg":"Success","n":{"k":"}\"{"}},"sign":"abc"}"#;
        assert_eq!(
            response_node(body, "alipay_x_response"),
            Some(r#"{"code":"10000","msg":"Success","n":{"k":"}\"{"}}"#)
        );
        assert_eq!(response_node(body, "error_response"), None);
        let twice = r#"{"alipay_x_response":{"code":"1"},"alipay_x_response":{"code":"10000"}}"#;
        assert_eq!(response_node(twice, "alipay_x_response"), None);
        assert_eq!(
            response_node(r#"{"alipay_x_response":"x"}"#, "alipay_x_response"),
            None
        );
        assert_eq!(
            response_node(r#"{"alipay_x_response":{"a":1"#, "alipay_x_response"),
            None
        );
    }
}
