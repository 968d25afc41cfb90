//! Building a rustls connector (ring provider) from [`TlsOptions`].

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::options::TlsOptions;

fn open(path: &std::path::Path) -> Result<BufReader<File>, ClientError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?
        .ok_or_else(|| ClientError::Tls(format!("{}: no PEM private key found", path.display())))
}

/// A connector that trusts only `opts.ca_file` and presents the client certificate if given.
pub(crate) fn connector(opts: &TlsOptions) -> Result<TlsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&opts.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", opts.ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| ClientError::Tls(e.to_string()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ClientError::Tls(
                "a client certificate needs both a cert file and a key file".into(),
            ))
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name to verify for `addr` ("host:port"): the override, else the host.
pub(crate) fn server_name(
    opts: &TlsOptions,
    addr: &str,
) -> Result<ServerName<'static>, ClientError> {
    let host = match &opts.server_name {
        Some(n) => n.clone(),
        None => host_of(addr).to_owned(),
    };
    ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Tls(format!("invalid server name {host:?}")))
}

/// The host part of "host:port" or "[v6]:port".
pub(crate) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    match addr.rfind(':') {
        Some(i) => &addr[..i],
        None => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:8046"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8046"), "::1");
        assert_eq!(host_of("example.com:1"), "example.com");
    }

    #[test]
    fn missing_ca_file_is_a_tls_error() {
        let opts = TlsOptions {
            ca_file: "/nonexistent/ca.pem".into(),
            ..TlsOptions::default()
        };
        let err = connector(&opts).err().unwrap();
        assert!(matches!(err, ClientError::Tls(ref m) if m.contains("/nonexistent/ca.pem")));
    }
}
