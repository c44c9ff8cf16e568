//! Aliyun RPC Signature V1 (HMAC-SHA1): Aliyun percent-encoding, `StringToSign`, signing,
//! verification, and the `SignatureNonce` replay store.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

use crate::state::lock;

/// Nonces are remembered at least this long (the accepted timestamp skew).
const NONCE_WINDOW_SECS: u64 = 15 * 60;

/// Aliyun's unreserved set: everything except `A-Z a-z 0-9 - _ . ~` is encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes like Aliyun's `percentEncode` (space → %20, `*` → %2A, `~` kept).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// Builds the Signature V1 `StringToSign` for `method` and `params` (Signature excluded).
pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    let canonical = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonical)
    )
}

fn mac(secret: &str, string_to_sign: &str) -> Option<Hmac<Sha1>> {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(format!("{secret}&").as_bytes()).ok()?;
    m.update(string_to_sign.as_bytes());
    Some(m)
}

/// Computes the base64 Signature V1 for `string_to_sign` with `secret`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    mac(secret, string_to_sign)
        .map(|m| base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

pub(crate) fn verify(secret: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(secret, string_to_sign).is_some_and(|m| m.verify_slice(&raw).is_ok())
}

/// Remembers recently used `SignatureNonce`s (two generations, rotated every 15 min or 1M entries).
pub(crate) struct NonceStore {
    inner: Mutex<Nonces>,
    hasher: RandomState,
}

struct Nonces {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    rotated: Instant,
}

impl Default for NonceStore {
    fn default() -> Self {
        NonceStore {
            inner: Mutex::new(Nonces {
                current: HashSet::new(),
                previous: HashSet::new(),
                rotated: Instant::now(),
            }),
            hasher: RandomState::new(),
        }
    }
}

impl NonceStore {
    /// Returns false if `nonce` was already used; otherwise remembers it.
    pub(crate) fn insert(&self, access_key: &str, nonce: &str) -> bool {
        let h = self.hasher.hash_one((access_key, nonce));
        let mut n = lock(&self.inner);
        if n.rotated.elapsed() >= Duration::from_secs(NONCE_WINDOW_SECS)
            || n.current.len() >= 1_000_000
        {
            n.previous = std::mem::take(&mut n.current);
            n.rotated = Instant::now();
        }
        if n.previous.contains(&h) {
            return false;
        }
        n.current.insert(h)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_aliyun() {
        assert_eq!(
            percent_encode("a b*c~d/e+f=g&h"),
            "a%20b%2Ac~d%2Fe%2Bf%3Dg%26h"
        );
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        assert_eq!(percent_encode("-_.~AZaz09"), "-_.~AZaz09");
    }

    /// The worked example from Aliyun's Signature V1 documentation (DescribeRegions, ECS).
    #[test]
    fn documented_example() {
        let mut p = BTreeMap::new();
        for (k, v) in [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        let sts = string_to_sign("GET", &p);
        assert_eq!(
            sts,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(sign("testsecret", &sts), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    #[test]
    fn nonce_reuse_detected() {
        let n = NonceStore::default();
        assert!(n.insert("ak", "x"));
        assert!(!n.insert("ak", "x"));
        assert!(n.insert("ak", "y"));
    }
}
