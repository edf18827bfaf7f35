//! The client's TLS configuration, built once per [`Producer`](crate::Producer) or
//! [`Consumer`](crate::Consumer) from go-nsq's options (`tls_root_ca_file`, `tls_cert`,
//! `tls_key`, `tls_insecure_skip_verify`) and used for every connection's in-band upgrade.
//!
//! The rustls configuration itself comes from `nsq_net::tls::client_config_from`, the builder
//! every client in the workspace shares (the HTTP client too): the CA file, or else the system
//! roots as Go's `crypto/x509` reads them on Linux (`SSL_CERT_FILE`, then the usual bundles),
//! a client certificate, skip-verify. Files are read once, so a bad path fails at
//! `Producer::connect` / `Consumer::new` rather than on every reconnect.

use std::sync::Arc;

use nsq_net::rustls::pki_types::ServerName;
use nsq_net::rustls::ClientConfig;
use nsq_net::tls::ClientTlsOptions;

use crate::config::Config;
use crate::error::{Error, Result};

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
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return Err(Error::Config(
            "tls_cert and tls_key must be given together".into(),
        ));
    }
    if !config.tls_insecure_skip_verify
        && config.tls_root_ca_file.is_none()
        && nsq_net::tls::system_roots().is_none()
    {
        return Err(Error::Tls(
            "no tls_root_ca_file given and no system CA bundle found (set tls_root_ca_file, \
             SSL_CERT_FILE or tls_insecure_skip_verify)"
                .into(),
        ));
    }
    let opts = ClientTlsOptions {
        root_ca: config.tls_root_ca_file.clone(),
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
        insecure_skip_verify: config.tls_insecure_skip_verify,
        min_version: config.tls_min_version,
    };
    let tls = nsq_net::tls::client_config_from(&opts).map_err(|e| match &config.tls_cert {
        Some(cert) if matches!(e, nsq_net::tls::TlsError::Rustls(_)) => {
            Error::Tls(format!("client certificate {}: {e}", cert.display()))
        }
        _ => Error::Tls(e.to_string()),
    })?;
    Ok(Some(Arc::new(tls)))
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
