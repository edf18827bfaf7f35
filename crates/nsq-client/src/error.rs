//! The client's error type.

use std::io;

use nsq_protocol::{ErrorCode, ProtocolError};

/// Everything that can go wrong in `nsq-client`.
///
/// Public APIs return this type (never `anyhow`). The enum is `#[non_exhaustive]`: match the
/// variants you care about and keep a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket error (connect, read or write).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that do not follow the protocol, or an answer the client did not
    /// expect at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered with an error frame `"<E_CODE> <description>"`,
    /// e.g. `E_BAD_TOPIC`, `E_PUB_FAILED`.
    #[error("{code} {desc}")]
    Server {
        /// The `E_*` code as sent by the server.
        code: String,
        /// The description after the code.
        desc: String,
    },
    /// A read, write, dial or HTTP request took longer than its configured timeout.
    #[error("timed out")]
    Timeout,
    /// The connection closed (or the producer/consumer was stopped) before the request was
    /// answered.
    #[error("connection closed")]
    Closed,
    /// An argument was rejected before anything was sent (bad topic name, empty body, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configuration key or value could not be applied ([`crate::Config::set`]).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A feature or option this client does not implement.
    #[error("not supported by nsq-client yet: {0}")]
    Unsupported(String),
    /// TLS could not be set up: a certificate or key file could not be loaded, or the
    /// handshake failed (e.g. the server's certificate does not chain to the configured CA).
    #[error("TLS: {0}")]
    Tls(String),
    /// nsqd requires AUTH and no `auth_secret` is configured. (A secret the server refuses
    /// comes back as [`Error::Server`] with its `E_*` code, e.g. `E_UNAUTHORIZED`.)
    #[error("AUTH: {0}")]
    Auth(String),
    /// An nsqlookupd HTTP query failed (bad status, unparsable body).
    #[error("nsqlookupd: {0}")]
    Lookupd(String),
}

impl Error {
    /// Builds a [`Error::Server`] from an error frame body (`"E_CODE description"`).
    pub(crate) fn from_error_frame(data: &[u8]) -> Error {
        let text = String::from_utf8_lossy(data);
        let (code, desc) = match text.split_once(' ') {
            Some((c, d)) => (c.to_owned(), d.to_owned()),
            None => (text.into_owned(), String::new()),
        };
        Error::Server { code, desc }
    }

    /// The typed code of a [`Error::Server`] error, if it is one NSQ defines.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => ErrorCode::from_wire(code),
            _ => None,
        }
    }

    /// A copy suitable for handing to several waiters (I/O errors keep kind and text).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            Error::Protocol(s) => Error::Protocol(s.clone()),
            Error::Server { code, desc } => Error::Server {
                code: code.clone(),
                desc: desc.clone(),
            },
            Error::Timeout => Error::Timeout,
            Error::Closed => Error::Closed,
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::Config(s) => Error::Config(s.clone()),
            Error::Unsupported(s) => Error::Unsupported(s.clone()),
            Error::Tls(s) => Error::Tls(s.clone()),
            Error::Auth(s) => Error::Auth(s.clone()),
            Error::Lookupd(s) => Error::Lookupd(s.clone()),
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e.wire_text())
    }
}

/// Shorthand for `Result<T, nsq_client::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frame_split() {
        let e = Error::from_error_frame(b"E_BAD_TOPIC PUB topic name \"a b\" is not valid");
        match &e {
            Error::Server { code, desc } => {
                assert_eq!(code, "E_BAD_TOPIC");
                assert_eq!(desc, "PUB topic name \"a b\" is not valid");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.server_code(), Some(ErrorCode::BadTopic));
        assert_eq!(
            e.to_string(),
            "E_BAD_TOPIC PUB topic name \"a b\" is not valid"
        );
        let e = Error::from_error_frame(b"E_INVALID");
        assert!(
            matches!(e, Error::Server { ref code, ref desc } if code == "E_INVALID" && desc.is_empty())
        );
    }
}
