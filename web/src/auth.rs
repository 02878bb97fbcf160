//! Bearer tokens: reads are open unless a read token is configured; writes
//! always need the write token, and are refused outright (403) when none is
//! configured. The write token also grants reads. Tokens are compared in
//! constant time and never printed.

use std::fmt;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A secret bearer token; `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    fn matches(&self, given: &[u8]) -> bool {
        // ct_eq on slices of different lengths returns false without looking
        // at the contents; the length of a token is not the secret.
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} chars>)", self.0.len())
    }
}

/// The tokens a server checks.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub read: Option<Token>,
    pub write: Option<Token>,
}

/// The token in an `Authorization: Bearer <token>` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

impl Tokens {
    /// Whether read endpoints need a token.
    pub fn read_required(&self) -> bool {
        self.read.is_some()
    }

    pub fn writes_enabled(&self) -> bool {
        self.write.is_some()
    }

    /// Allows a read: open without a read token, else the read or write token.
    pub fn check_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(read) = &self.read else {
            return Ok(());
        };
        let given = bearer(headers).ok_or(ApiError::MissingToken)?;
        let write_ok = self.write.as_ref().is_some_and(|w| w.matches(given));
        if read.matches(given) || write_ok {
            Ok(())
        } else {
            Err(ApiError::BadToken)
        }
    }

    /// Allows a write: only with the write token, and never when none is set.
    pub fn check_write(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let write = self.write.as_ref().ok_or(ApiError::WritesDisabled)?;
        let given = bearer(headers).ok_or(ApiError::MissingToken)?;
        if write.matches(given) {
            Ok(())
        } else {
            Err(ApiError::BadToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(value) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn reads_are_open_without_a_read_token() {
        let tokens = Tokens::default();
        assert!(tokens.check_read(&headers(None)).is_ok());
        assert!(matches!(
            tokens.check_write(&headers(Some("Bearer x"))),
            Err(ApiError::WritesDisabled)
        ));
    }

    #[test]
    fn tokens_are_checked_exactly() {
        let tokens = Tokens {
            read: Some(Token::new("read-token-0123456789")),
            write: Some(Token::new("write-token-0123456789")),
        };
        assert!(matches!(
            tokens.check_read(&headers(None)),
            Err(ApiError::MissingToken)
        ));
        assert!(tokens
            .check_read(&headers(Some("Bearer read-token-0123456789")))
            .is_ok());
        assert!(tokens
            .check_read(&headers(Some("bearer  write-token-0123456789 ")))
            .is_ok());
        assert!(matches!(
            tokens.check_read(&headers(Some("Bearer read-token-012345678"))),
            Err(ApiError::BadToken)
        ));
        assert!(matches!(
            tokens.check_write(&headers(Some("Bearer read-token-0123456789"))),
            Err(ApiError::BadToken)
        ));
        assert!(matches!(
            tokens.check_write(&headers(Some("Basic write-token-0123456789"))),
            Err(ApiError::MissingToken)
        ));
        assert!(tokens
            .check_write(&headers(Some("Bearer write-token-0123456789")))
            .is_ok());
        assert_eq!(
            format!("{:?}", tokens.read.unwrap()),
            "Token(<21 chars>)",
            "never printed"
        );
    }
}
