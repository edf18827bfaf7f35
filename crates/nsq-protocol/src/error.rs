//! NSQ's `E_*` error codes and the decoder's error type.
//!
//! On the wire an error is a frame of type 1 whose body is `"<E_CODE> <description>"`
//! (Go: `internal/protocol/errors.go`). Clients compare on the code prefix.

use std::borrow::Cow;
use std::fmt;

/// Every error code nsqd sends (Go: `nsqd/protocol_v2.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad state, bad parameters, unknown command, out-of-range values.
    Invalid,
    /// A command body that cannot be read or decoded.
    BadBody,
    /// An invalid topic name.
    BadTopic,
    /// An invalid channel name.
    BadChannel,
    /// A message body that is empty, too big or cannot be read.
    BadMessage,
    /// Unknown protocol magic.
    BadProtocol,
    /// PUB could not be queued.
    PubFailed,
    /// MPUB could not be queued.
    MpubFailed,
    /// DPUB could not be queued.
    DpubFailed,
    /// FIN of a message that is not in flight for this client (non-fatal).
    FinFailed,
    /// REQ of a message that is not in flight for this client (non-fatal).
    ReqFailed,
    /// TOUCH of a message that is not in flight for this client (non-fatal).
    TouchFailed,
    /// SUB refused (channel exiting, consumer limit).
    SubFailed,
    /// IDENTIFY negotiation failed.
    IdentifyFailed,
    /// AUTH sent to a server without auth.
    AuthDisabled,
    /// The auth server could not be consulted.
    AuthFailed,
    /// Not authorised.
    Unauthorized,
    /// AUTH required before this command.
    AuthFirst,
    /// The AUTH response could not be sent.
    AuthError,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthError => "E_AUTH_ERROR",
        }
    }

    /// Parses a code from the start of an error frame body.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        let code = s.split(' ').next().unwrap_or("");
        Some(match code {
            "E_INVALID" => ErrorCode::Invalid,
            "E_BAD_BODY" => ErrorCode::BadBody,
            "E_BAD_TOPIC" => ErrorCode::BadTopic,
            "E_BAD_CHANNEL" => ErrorCode::BadChannel,
            "E_BAD_MESSAGE" => ErrorCode::BadMessage,
            "E_BAD_PROTOCOL" => ErrorCode::BadProtocol,
            "E_PUB_FAILED" => ErrorCode::PubFailed,
            "E_MPUB_FAILED" => ErrorCode::MpubFailed,
            "E_DPUB_FAILED" => ErrorCode::DpubFailed,
            "E_FIN_FAILED" => ErrorCode::FinFailed,
            "E_REQ_FAILED" => ErrorCode::ReqFailed,
            "E_TOUCH_FAILED" => ErrorCode::TouchFailed,
            "E_SUB_FAILED" => ErrorCode::SubFailed,
            "E_IDENTIFY_FAILED" => ErrorCode::IdentifyFailed,
            "E_AUTH_DISABLED" => ErrorCode::AuthDisabled,
            "E_AUTH_FAILED" => ErrorCode::AuthFailed,
            "E_UNAUTHORIZED" => ErrorCode::Unauthorized,
            "E_AUTH_FIRST" => ErrorCode::AuthFirst,
            "E_AUTH_ERROR" => ErrorCode::AuthError,
            _ => return None,
        })
    }

    /// Whether nsqd closes the connection after sending this error.
    /// Only FIN/REQ/TOUCH failures keep the connection (Go: `protocol.NewClientErr`).
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decode failure. Every decode failure is fatal for the connection, as in Go:
/// after one the byte stream can no longer be trusted to be in sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {desc}")]
pub struct ProtocolError {
    /// The wire code.
    pub code: ErrorCode,
    /// The human-readable description sent after the code.
    pub desc: Cow<'static, str>,
}

impl ProtocolError {
    /// Builds an error from a code and description.
    pub fn new(code: ErrorCode, desc: impl Into<Cow<'static, str>>) -> Self {
        ProtocolError {
            code,
            desc: desc.into(),
        }
    }

    /// The error frame body: `"<E_CODE> <description>"`.
    pub fn wire_text(&self) -> String {
        format!("{} {}", self.code, self.desc)
    }
}
