//! Encryption at rest for provider credentials (AES-256-GCM, a fresh nonce per value).
//!
//! Stored form: `v1:` + base64(nonce ‖ ciphertext ‖ tag). The key comes from settings or, on a
//! zero-config start, from a key file created with mode 0600 beside the database.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;

const AAD: &[u8] = b"msghub/channel-credentials/v1";

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    // HMAC takes keys of any length, so this never fails.
    let Ok(mut m) = <hmac::Hmac<sha2::Sha256>>::new_from_slice(key) else {
        return [0u8; 32];
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("value too large to encrypt")]
    TooLarge,
    #[error("stored secret is malformed or was encrypted with another key")]
    Undecryptable,
}

#[derive(Clone)]
pub struct Crypto {
    cipher: Aes256Gcm,
    /// A key derived from the master key for URL tokens (receipt endpoints); never the
    /// encryption key itself.
    token_key: [u8; 32],
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(<key redacted>)")
    }
}

impl Crypto {
    pub fn from_base64(key: &str) -> Result<Crypto, CryptoError> {
        let bytes = B64.decode(key.trim()).map_err(|_| CryptoError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        let token_key = mac(&bytes, b"msghub/url-tokens/v1");
        Ok(Crypto { cipher, token_key })
    }

    /// An unguessable, stable token naming `purpose` (e.g. a channel's receipt endpoint), so
    /// a provider that cannot sign its callbacks still proves it was given the URL.
    pub fn url_token(&self, purpose: &str) -> String {
        hex::encode(&mac(&self.token_key, purpose.as_bytes())[..16])
    }

    /// A key for `purpose` (e.g. a channel's unsubscribe links), derived from the master key
    /// and never the encryption key itself.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        mac(&self.token_key, format!("key/{purpose}").as_bytes())
    }

    /// Constant-time check of a token made by [`Crypto::url_token`].
    pub fn check_url_token(&self, purpose: &str, token: &str) -> bool {
        msghub_providers::constant_time_eq(self.url_token(purpose).as_bytes(), token.as_bytes())
    }

    /// The configured key, or the key file in `data_dir`, created on first use.
    pub fn load_or_create(configured: &str, data_dir: &Path) -> Result<Crypto, CryptoError> {
        if !configured.is_empty() {
            return Crypto::from_base64(configured);
        }
        let path = data_dir.join("master.key");
        let file_err = |e| CryptoError::KeyFile(path.display().to_string(), e);
        match std::fs::read_to_string(&path) {
            Ok(text) => Crypto::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(file_err)?;
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let encoded = B64.encode(key);
                write_private(&path, &encoded).map_err(file_err)?;
                Crypto::from_base64(&encoded)
            }
            Err(e) => Err(file_err(e)),
        }
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: AAD,
                },
            )
            .map_err(|_| CryptoError::TooLarge)?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!("v1:{}", B64.encode(out)))
    }

    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>, CryptoError> {
        let body = stored
            .strip_prefix("v1:")
            .ok_or(CryptoError::Undecryptable)?;
        let raw = B64.decode(body).map_err(|_| CryptoError::Undecryptable)?;
        if raw.len() < 12 + 16 {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, sealed) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Undecryptable)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: AAD,
                },
            )
            .map_err(|_| CryptoError::Undecryptable)
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_do_not_contain_the_plaintext() {
        let c = Crypto::from_base64(&B64.encode([7u8; 32])).unwrap();
        let sealed = c.encrypt(b"{\"master_secret\":\"s3cr3t\"}").unwrap();
        assert!(!sealed.contains("s3cr3t"));
        assert_ne!(
            sealed,
            c.encrypt(b"{\"master_secret\":\"s3cr3t\"}").unwrap(),
            "nonces must differ"
        );
        assert_eq!(
            c.decrypt(&sealed).unwrap(),
            b"{\"master_secret\":\"s3cr3t\"}"
        );
    }

    #[test]
    fn another_key_or_tampering_cannot_decrypt() {
        let a = Crypto::from_base64(&B64.encode([1u8; 32])).unwrap();
        let b = Crypto::from_base64(&B64.encode([2u8; 32])).unwrap();
        let sealed = a.encrypt(b"x").unwrap();
        assert!(b.decrypt(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(a.decrypt(&tampered).is_err() || tampered == sealed);
    }

    #[test]
    fn a_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Crypto::load_or_create("", dir.path()).unwrap();
        let b = Crypto::load_or_create("", dir.path()).unwrap();
        assert_eq!(b.decrypt(&a.encrypt(b"y").unwrap()).unwrap(), b"y");
        assert!(Crypto::from_base64("c2hvcnQ=").is_err());
    }
}
