//! TLS for NSQ connections with rustls (ring provider): the server configuration nsqd builds
//! from its `--tls-*` flags (Go's `buildTLSConfig`), the client configuration every client in
//! the workspace builds from the same options ([`ClientTlsOptions`]: CA file or the system
//! roots, client certificate, skip-verify, minimum version; used by nsq-client and
//! nsq-http-client), and what `/stats` reports about a session.
//!
//! Differences from Go's `crypto/tls` that operators can see:
//! - rustls speaks TLS 1.2 and 1.3 only. `--tls-min-version=tls1.0` / `tls1.1` therefore mean
//!   "1.2 and up" ([`MinVersion::from_flag`] says so); `tls1.3` allows only 1.3.
//! - `require-verify` needs a CA file (Go would fall back to the system roots, which never
//!   verify a private client certificate anyway).
//!
//! The server's own certificate is never validated (expired or SHA-1 signed certificates
//! load, as in Go: validation is the client's business). Keys may be PKCS#1, PKCS#8 or SEC1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// Building a TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {source}")]
    Pem {
        /// "certificate", "private key" or "CA certificates".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// A combination of options that cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// Oldest protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (also what Go's `tls1.0` and `tls1.1` become).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// From nsqd's `--tls-min-version` spelling (`tls1.0` ... `tls1.3`, case-insensitive);
    /// `None` for anything else. `tls1.0` and `tls1.1` map to [`MinVersion::Tls12`].
    pub fn from_flag(s: &str) -> Option<MinVersion> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tls1.0" | "tls1.1" | "tls1.2" => Some(MinVersion::Tls12),
            "tls1.3" => Some(MinVersion::Tls13),
            _ => None,
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => BOTH,
            MinVersion::Tls13 => ONLY13,
        }
    }
}

/// Whether and how the server asks for client certificates (`--tls-client-auth-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is requested (Go's `NoClientCert`, the default).
    #[default]
    None,
    /// A certificate is required but not verified (`require`, Go's `RequireAnyClientCert`).
    Require,
    /// A certificate is required and must chain to the CA file (`require-verify`).
    RequireVerify,
}

/// What the server needs to build its configuration.
#[derive(Debug, Clone, Default)]
pub struct ServerTlsOptions {
    /// PEM certificate chain (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key (`--tls-key`).
    pub key: PathBuf,
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// PEM CA certificates that client certificates must chain to (`--tls-root-ca-file`).
    pub root_ca: Option<PathBuf>,
    /// Oldest version accepted.
    pub min_version: MinVersion,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file (PKCS#1, PKCS#8 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        source,
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| {
            TlsError::Invalid(format!("bad CA certificate in {}: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

/// Go's `buildTLSConfig` in rustls terms.
pub fn server_config(opts: &ServerTlsOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let certs = load_certs(&opts.cert)?;
    let key = load_key(&opts.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(opts.min_version.versions())?;
    let builder = match opts.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Require => builder.with_client_cert_verifier(Arc::new(AnyClientCert {
            algs: provider.signature_verification_algorithms,
        })),
        ClientAuth::RequireVerify => {
            let Some(ca) = &opts.root_ca else {
                return Err(TlsError::Invalid(
                    "--tls-client-auth-policy=require-verify needs --tls-root-ca-file".into(),
                ));
            };
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

/// A client configuration: trust `root_ca` (PEM), and present `client_cert` = (cert, key)
/// PEM files when given.
pub fn client_config(
    root_ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(root_ca)?);
    let config = match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The CA bundles Go's `crypto/x509` looks for on Linux (`root_linux.go`), in its order.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trusted roots, read from the files Go's `crypto/x509` reads on Linux
/// (`SSL_CERT_FILE`, then the usual distribution bundles), so no extra dependency is needed.
/// `None` when no bundle is found. Certificates webpki cannot parse are skipped, as Go skips
/// what it cannot use.
pub fn system_roots() -> Option<RootCertStore> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(certs) = load_certs(&path) {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(certs);
            if !roots.is_empty() {
                return Some(roots);
            }
        }
    }
    None
}

/// The certificates of a PEM CA file as a root store.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    load_roots(path)
}

/// What a TLS *client* can be told (Go's `tls.Config` as nsqadmin's `--http-client-tls-*` and
/// go-nsq's `tls_*` options fill it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// PEM CA certificates to trust instead of the system roots.
    pub root_ca: Option<PathBuf>,
    /// PEM client certificate chain (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Accept any server certificate (the handshake signature is still checked).
    pub insecure_skip_verify: bool,
    /// Oldest version offered.
    pub min_version: MinVersion,
}

/// A client configuration from [`ClientTlsOptions`]: the CA file or else the system roots, an
/// optional client certificate. Without a CA file on a machine with no system bundle the root
/// store is empty, so every verified handshake fails ("invalid peer certificate:
/// UnknownIssuer"); callers that want to refuse earlier check [`system_roots`] themselves.
pub fn client_config_from(opts: &ClientTlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(opts.min_version.versions())?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureServerVerifier {
                algs: provider.signature_verification_algorithms,
            }))
    } else {
        let roots = match &opts.root_ca {
            Some(ca) => load_roots(ca)?,
            None => system_roots().unwrap_or_else(RootCertStore::empty),
        };
        builder.with_root_certificates(roots)
    };
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            Ok(builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?)
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(TlsError::Invalid(
            "a client certificate and its key must be given together".into(),
        )),
    }
}

/// Skip-verify: any server certificate is accepted, but the handshake signature is still
/// checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
pub struct InsecureServerVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl InsecureServerVerifier {
    /// With the ring provider's signature algorithms.
    pub fn new() -> InsecureServerVerifier {
        InsecureServerVerifier {
            algs: provider().signature_verification_algorithms,
        }
    }
}

impl Default for InsecureServerVerifier {
    fn default() -> Self {
        InsecureServerVerifier::new()
    }
}

impl ServerCertVerifier for InsecureServerVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Go's `RequireAnyClientCert`: the client must present a certificate and prove it holds the
/// key (the handshake signature is checked), but the certificate itself is not validated.
#[derive(Debug)]
struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What `/stats` shows about a TLS session (Go's `prettyConnectionState`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.2` or `TLS1.3`.
    pub version: &'static str,
    /// IANA name as Go prints it, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher_suite: &'static str,
    /// ALPN protocol, empty when none.
    pub negotiated_protocol: String,
    /// Whether ALPN was agreed by both sides (always true with rustls when set).
    pub negotiated_protocol_is_mutual: bool,
    /// Subject common name of the peer's certificate, empty without one (sent to the auth
    /// server as `common_name`).
    pub peer_common_name: String,
}

impl TlsInfo {
    /// Reads the negotiated parameters of a finished handshake.
    pub fn from_state(state: &CommonState) -> TlsInfo {
        let version = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
            _ => "Unknown",
        };
        let cipher_suite = state
            .negotiated_cipher_suite()
            .map(|s| go_cipher_suite_name(s.suite()))
            .unwrap_or("");
        let alpn = state
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let peer_common_name = state
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| common_name(c))
            .unwrap_or_default();
        TlsInfo {
            version,
            cipher_suite,
            negotiated_protocol_is_mutual: !alpn.is_empty(),
            negotiated_protocol: alpn,
            peer_common_name,
        }
    }
}

/// Go's `tls.CipherSuiteName` spelling (rustls prefixes TLS 1.3 suites with `TLS13_`).
fn go_cipher_suite_name(s: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match s {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => other.as_str().unwrap_or("Unknown"),
    }
}

/// One DER element: (tag, content, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = input.get(header..header.checked_add(len)?)?;
    Some((tag, content, &input[header + len..]))
}

/// The subject common name (OID 2.5.4.3) of a DER certificate; the last one wins, as Go's
/// `pkix.Name` does.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der_next(cert)?;
    let (_, tbs, _) = der_next(certificate)?;
    let mut fields = tbs;
    let (tag, _, rest) = der_next(fields)?;
    if tag == 0xa0 {
        fields = rest; // explicit version
    }
    // serial, signature algorithm, issuer, validity, then subject.
    for _ in 0..4 {
        fields = der_next(fields)?.2;
    }
    let (_, mut subject, _) = der_next(fields)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (_, mut set, rest) = der_next(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, atv, rest) = der_next(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_next(atv)?;
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, v, _) = der_next(value)?;
                cn = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_version_flags() {
        assert_eq!(MinVersion::from_flag("tls1.0"), Some(MinVersion::Tls12));
        assert_eq!(MinVersion::from_flag("TLS1.1"), Some(MinVersion::Tls12));
        assert_eq!(MinVersion::from_flag("tls1.2"), Some(MinVersion::Tls12));
        assert_eq!(MinVersion::from_flag("tls1.3"), Some(MinVersion::Tls13));
        assert_eq!(MinVersion::from_flag("ssl3.0"), None);
    }

    #[test]
    fn common_name_from_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "nsq-rs");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("client-1"));
        assert_eq!(common_name(&cert.der()[..20]), None);
    }

    #[test]
    fn cipher_suite_names_follow_go() {
        assert_eq!(
            go_cipher_suite_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            go_cipher_suite_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
    }
}
