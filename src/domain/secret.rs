//! Secrets read from the config, the environment (`env:NAME`) or a file (`file:PATH`), never printed.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret value. `Debug` and `Display` never show it; compare with `subtle`, not `==`.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
    /// SHA-256 of the bytes, computed once: token checks compare digests on every request.
    digest: [u8; 32],
}

impl Secret {
    /// Resolves a config value: `env:NAME` reads an environment variable, `file:PATH` reads a
    /// file (trailing newline trimmed), anything else is the secret itself.
    pub fn resolve(raw: &str) -> Result<Self, String> {
        let value = if let Some(name) = raw.strip_prefix("env:") {
            std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?
        } else if let Some(path) = raw.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read secret file {path}: {err}"))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            raw.to_owned()
        };
        if value.is_empty() {
            return Err("secret is empty".to_owned());
        }
        Ok(Self::from_bytes(value))
    }

    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let digest = Sha256::digest(&bytes).into();
        Self { bytes, digest }
    }

    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// Equal when the bytes are (compared by digest, in constant time): a reload keeps a
/// destination whose secret did not change.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.digest.ct_eq(&other.digest).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_literal_env_and_file_and_never_prints() {
        assert_eq!(Secret::resolve("abc").unwrap().expose(), b"abc");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let secret = Secret::resolve(&format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.expose(), b"from-file");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let err = Secret::resolve("env:HOOKRELAY_TEST_SURELY_UNSET").unwrap_err();
        assert!(err.contains("HOOKRELAY_TEST_SURELY_UNSET"), "{err}");
        assert!(Secret::resolve("").is_err());
    }
}
