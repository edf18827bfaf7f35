//! The client's TLS configuration, built once per [`Producer`](crate::Producer) or
//! [`Consumer`](crate::Consumer) from go-nsq's options (`tls_root_ca_file`, `tls_cert`,
//! `tls_key`, `tls_insecure_skip_verify`) and used for every connection's in-band upgrade.
//!
//! Why here and not in `nsq-net`: `nsq_net::tls::client_config` covers the common "trust this
//! CA file" case; go-nsq also trusts the system roots when no CA file is given and can skip
//! verification, which only a client needs. Files are read once, so a bad path fails at
//! `Producer::connect` / `Consumer::new` rather than on every reconnect.
//!
//! System roots are read from the files Go's `crypto/x509` reads on Linux (`SSL_CERT_FILE`,
//! then the usual distribution bundles), so no extra dependency is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nsq_net::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use nsq_net::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use nsq_net::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use nsq_net::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use nsq_net::tls::{load_certs, load_key};

use crate::config::Config;
use crate::error::{Error, Result};

/// The CA bundles Go's `crypto/x509` looks for on Linux (`root_linux.go`), in its order.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// Whether any TLS option is set, i.e. whether a TLS configuration must be built.
pub(crate) fn wanted(config: &Config) -> bool {
    config.tls_v1
        || config.tls_root_ca_file.is_some()
        || config.tls_cert.is_some()
        || config.tls_key.is_some()
        || config.tls_insecure_skip_verify
}

/// Builds the rustls client configuration for `config`, or `None` when no TLS option is set.
pub(crate) fn client_config(config: &Config) -> Result<Option<Arc<ClientConfig>>> {
    if !wanted(config) {
        return Ok(None);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = if config.tls_insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification {
                algs: provider.signature_verification_algorithms,
            }))
    } else {
        builder.with_root_certificates(roots(config.tls_root_ca_file.as_deref())?)
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                load_certs(cert).map_err(tls_err)?,
                load_key(key).map_err(tls_err)?,
            )
            .map_err(|e| Error::Tls(format!("client certificate {}: {e}", cert.display())))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::Config(
                "tls_cert and tls_key must be given together".into(),
            ))
        }
    };
    Ok(Some(Arc::new(tls)))
}

/// The CA file's certificates, or the system's when no file is configured.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        for cert in load_certs(path).map_err(tls_err)? {
            roots.add(cert).map_err(|e| {
                Error::Tls(format!("bad CA certificate in {}: {e}", path.display()))
            })?;
        }
        return Ok(roots);
    }
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(certs) = load_certs(&path) {
            // A system bundle may hold certificates webpki cannot parse; skip those, as Go
            // skips what it cannot use.
            roots.add_parsable_certificates(certs);
            if !roots.is_empty() {
                return Ok(roots);
            }
        }
    }
    Err(Error::Tls(
        "no tls_root_ca_file given and no system CA bundle found (set tls_root_ca_file, \
         SSL_CERT_FILE or tls_insecure_skip_verify)"
            .into(),
    ))
}

/// The name the server's certificate must carry: `tls_server_name` if set, else the host part
/// of the address, as go-nsq's `upgradeTLS` sets `ServerName` (an IP address is checked
/// against the certificate's IP SANs).
pub(crate) fn server_name(addr: &str, config: &Config) -> Result<ServerName<'static>> {
    let host = match &config.tls_server_name {
        Some(name) => name.as_str(),
        None => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']')
        }
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Tls(format!("{host:?} is not a valid TLS server name: {e}")))
}

/// `tls_insecure_skip_verify`: any certificate is accepted (the handshake signature is still
/// checked, so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoServerVerification {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_comes_from_the_address() {
        let c = Config::default();
        assert_eq!(
            format!("{:?}", server_name("127.0.0.1:4150", &c).unwrap()),
            format!("{:?}", ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(
            format!("{:?}", server_name("[::1]:4150", &c).unwrap()),
            format!("{:?}", ServerName::try_from("::1").unwrap())
        );
        let c = Config {
            tls_server_name: Some("nsqd.example".into()),
            ..Config::default()
        };
        assert_eq!(
            format!("{:?}", server_name("10.0.0.1:4150", &c).unwrap()),
            format!("{:?}", ServerName::try_from("nsqd.example").unwrap())
        );
    }

    #[test]
    fn no_tls_options_build_nothing_and_half_a_key_pair_is_an_error() {
        assert!(client_config(&Config::default()).unwrap().is_none());
        let c = Config {
            tls_insecure_skip_verify: true,
            tls_cert: Some("/nonexistent/cert.pem".into()),
            ..Config::default()
        };
        assert!(matches!(client_config(&c), Err(Error::Config(_))));
        let c = Config {
            tls_root_ca_file: Some("/nonexistent/ca.pem".into()),
            ..Config::default()
        };
        let e = client_config(&c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
