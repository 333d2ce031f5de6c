//! TLS for people who serve wss:// without a reverse proxy: loads a PEM certificate chain and key
//! into a rustls server configuration. It must fail with the file's name, never silently serve
//! plain HTTP instead.

use std::io;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

pub fn server_config(files: &TlsFiles) -> io::Result<rustls::ServerConfig> {
    let invalid = |what: &str, path: &std::path::Path, err: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {}: {err}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| invalid("--tls-cert", &files.cert, &err))?;
    if certs.is_empty() {
        return Err(invalid(
            "--tls-cert",
            &files.cert,
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| invalid("--tls-key", &files.key, &err))?;
    // Name the provider: with more than one compiled in, rustls will not pick one by itself.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| invalid("--tls-cert", &files.cert, &err))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| invalid("--tls-key", &files.key, &err))
}
