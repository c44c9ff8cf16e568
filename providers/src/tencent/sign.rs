//! Tencent Cloud API 3.0 signature TC3-HMAC-SHA256 (providers.md §5.2).
//!
//! `CanonicalRequest = METHOD \n URI \n Query \n CanonicalHeaders \n SignedHeaders \n
//! hex(sha256(body))`; `StringToSign = "TC3-HMAC-SHA256" \n Timestamp \n Date/service/tc3_request
//! \n hex(sha256(CanonicalRequest))`; the key is derived as
//! `HMAC(HMAC(HMAC("TC3" + SecretKey, Date), service), "tc3_request")` and the signature is the
//! lowercase hex HMAC-SHA256 of the string to sign under it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub(crate) const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The content type msghub sends and signs; Tencent accepts it for every JSON API.
pub(crate) const CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// Headers covered by the signature, in canonical (sorted, lowercase) order.
pub(crate) const SIGNED_HEADERS: &str = "content-type;host";

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here. An empty MAC would
    // simply be refused by the gateway.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request of a POST with a JSON body to `uri` on `host` (`host[:port]`, exactly
/// as the `Host` header carries it).
pub(crate) fn canonical_request(uri: &str, host: &str, body: &[u8]) -> String {
    format!(
        "POST\n{uri}\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\n{SIGNED_HEADERS}\n{}",
        sha256_hex(body)
    )
}

/// `yyyy-MM-dd` (UTC) of a unix timestamp: the date of the credential scope.
pub(crate) fn scope_date(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

pub(crate) fn string_to_sign(timestamp: i64, service: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{}/{service}/tc3_request\n{}",
        scope_date(timestamp),
        sha256_hex(canonical_request.as_bytes())
    )
}

pub(crate) fn signature(
    secret_key: &str,
    timestamp: i64,
    service: &str,
    canonical_request: &str,
) -> String {
    let k_date = hmac(
        format!("TC3{secret_key}").as_bytes(),
        &scope_date(timestamp),
    );
    let k_service = hmac(&k_date, service);
    let k_signing = hmac(&k_service, "tc3_request");
    hex::encode(hmac(
        &k_signing,
        &string_to_sign(timestamp, service, canonical_request),
    ))
}

/// The `Authorization` header of a signed POST.
pub(crate) fn authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    timestamp: i64,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={secret_id}/{}/{service}/tc3_request, SignedHeaders={SIGNED_HEADERS}, Signature={}",
        scope_date(timestamp),
        signature(secret_key, timestamp, service, canonical_request)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The worked example of Tencent Cloud's signature v3 documentation (CVM DescribeInstances,
    /// timestamp 1551113065, the documentation's placeholder secret key), with its published
    /// intermediate hash and signature.
    #[test]
    fn published_describe_instances_vector() {
        let canonical = "POST\n/\n\ncontent-type:application/json; charset=utf-8\n\
                         host:cvm.tencentcloudapi.com\n\ncontent-type;host\n\
                         35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064";
        assert_eq!(
            string_to_sign(1_551_113_065, "cvm", canonical),
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            signature(
                "Gu5t9xGARNpq86cd98joQYCN3*******",
                1_551_113_065,
                "cvm",
                canonical
            ),
            "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
    }

    #[test]
    fn canonical_request_layout() {
        let c = canonical_request("/", "127.0.0.1:8080", b"{}");
        assert_eq!(
            c,
            format!(
                "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:127.0.0.1:8080\n\n\
                 content-type;host\n{}",
                sha256_hex(b"{}")
            )
        );
        // The SHA-256 of "{}".
        assert_eq!(
            sha256_hex(b"{}"),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn authorization_names_the_scope_and_the_signed_headers() {
        let canonical = canonical_request("/", "sms.tencentcloudapi.com", b"{}");
        let auth = authorization("AKIDtest", "key", "sms", 1_700_000_000, &canonical);
        assert_eq!(
            auth,
            format!(
                "TC3-HMAC-SHA256 Credential=AKIDtest/2023-11-14/sms/tc3_request, \
                 SignedHeaders=content-type;host, Signature={}",
                signature("key", 1_700_000_000, "sms", &canonical)
            )
        );
    }
}
