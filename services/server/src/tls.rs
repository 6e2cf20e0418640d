//! The listener's TLS, reloadable: the certificate, key and client CA are read at start and again every
//! `tls_reload_interval` and on SIGHUP, so a rotated certificate (cert-manager, a renewed CA bundle) is served to
//! new connections without a restart. Files that cannot be read or do not make a valid configuration leave the
//! one in use (a warning); connections already open keep theirs.

use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The TLS configuration new connections are accepted with, and the files it comes from.
pub struct ServerTls {
    files: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' bytes the configuration in use was built from: a reload that finds them unchanged keeps it
    /// (and its session cache).
    read: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ServerTls {
    /// Reads the files; an error names the file.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            current: RwLock::new(Arc::new(build(files)?)),
            read: std::sync::Mutex::new(contents(files)),
            files: files.clone(),
        })
    }

    /// The acceptor for a new connection, with the configuration as last loaded.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    /// Reads the files again: `Ok(true)` when they changed and now serve; the configuration in use stays if they
    /// are unchanged or do not make a valid one.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let now = contents(&self.files);
        let mut read = self
            .read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *read == now {
            return Ok(false);
        }
        let fresh = Arc::new(build(&self.files)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        *read = now;
        Ok(true)
    }
}

/// The bytes of the certificate, key and client CA files (empty for one that cannot be read).
fn contents(files: &TlsConfig) -> Vec<Vec<u8>> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| std::fs::read(path).unwrap_or_default())
    .collect()
}

fn build(files: &TlsConfig) -> anyhow::Result<rustls::ServerConfig> {
    let certificates =
        |path: &std::path::Path, what: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .with_context(|| format!("failed to read the TLS {what} {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "the TLS {what} {} holds no certificate",
                path.display()
            );
            Ok(certs)
        };
    let chain = certificates(&files.cert_file, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .with_context(|| format!("failed to read the TLS key {}", files.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "client CA")? {
                roots
                    .add(cert)
                    .with_context(|| format!("the TLS client CA {}", ca.display()))?;
            }
            // Optional client certificates: callers without one may still present a bearer token.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .with_context(|| format!("the TLS client CA {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
