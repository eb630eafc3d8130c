//! HTTPS on the listener (rustls): certificate chain and key from PEM files, reloadable on
//! SIGHUP without dropping connections. rustls' defaults are the modern ones (TLS 1.2 and
//! 1.3, forward-secret AEAD suites only); HTTP/1.1 is announced over ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("reading private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Accepts TLS connections with whatever configuration was loaded last.
#[derive(Clone)]
pub struct TlsAcceptor {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsAcceptor {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; on failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|err| TlsError::Certificate {
            path: cert.to_owned(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_owned(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    // The key's bytes never appear in an error: only the path and what kind of problem.
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|err| TlsError::Key {
        path: key.to_owned(),
        reason: match err {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            _ => "not a readable PEM private key".into(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|err| TlsError::Config(err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
