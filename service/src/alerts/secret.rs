//! Values that must never reach a log, a `Debug` dump or the API: the HMAC key
//! of a webhook ([`Secret`]) and its URL ([`WebhookUrl`]), since many receivers
//! (Slack's among them) put their credential in the URL's path or query.

use std::fmt;

use url::Url;

/// A webhook's HMAC-SHA256 key. `Debug` and `Display` print `<redacted>`; it has
/// no `Serialize`, so it cannot end up in an API response either.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(key: impl Into<Vec<u8>>) -> Secret {
        Secret(key.into())
    }

    /// The key itself, for signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated http(s) webhook URL. `Debug` and `Display` show only the scheme,
/// host and port ([`WebhookUrl::redacted`]); the path and query, where receivers
/// keep their tokens, are shown as `…`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a string is not a webhook URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("not a URL ({0}); write for example \"https://alerts.example/hook\"")]
    Parse(#[source] url::ParseError),
    #[error("{scheme:?} URLs cannot receive webhooks; use http or https")]
    Scheme { scheme: String },
}

impl WebhookUrl {
    /// Accepts absolute `http` and `https` URLs with a host.
    pub fn parse(text: &str) -> Result<WebhookUrl, WebhookUrlError> {
        let url = Url::parse(text.trim()).map_err(WebhookUrlError::Parse)?;
        match url.scheme() {
            // The url crate refuses http(s) URLs without a host, so a host is certain.
            "http" | "https" => Ok(WebhookUrl(url)),
            other => Err(WebhookUrlError::Scheme {
                scheme: other.to_owned(),
            }),
        }
    }

    /// The full URL, to send to. Never log it.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// `scheme://host[:port]/…`: enough to tell receivers apart in logs and the API.
    pub fn redacted(&self) -> String {
        let host = self.0.host_str().unwrap_or("");
        let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
        let rest = if self.0.path() == "/" && self.0.query().is_none() {
            "/"
        } else {
            "/…"
        };
        format!("{}://{host}{port}{rest}", self.0.scheme())
    }

    /// `text` with every part of this URL that may be a credential (the URL
    /// itself, user info, path, path segments, query and its values) replaced
    /// by `…`. Error messages are scrubbed before they are logged or shown,
    /// whatever library produced them. Parts shorter than [`SCRUB_MIN`]
    /// characters are left alone: they carry no secret worth the noise.
    pub fn scrub(&self, text: &str) -> String {
        let url = &self.0;
        let mut parts: Vec<String> = vec![url.as_str().to_owned()];
        if url.path() != "/" {
            parts.push(url.path().to_owned());
            parts.extend(url.path_segments().into_iter().flatten().map(str::to_owned));
        }
        if let Some(query) = url.query() {
            parts.push(query.to_owned());
            parts.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
        }
        parts.push(url.username().to_owned());
        parts.extend(url.password().map(str::to_owned));
        parts.retain(|p| p.chars().count() >= SCRUB_MIN);
        // Longest first, so a whole URL goes before the path inside it.
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut out = text.to_owned();
        for part in parts {
            if out.contains(&part) {
                out = out.replace(&part, "…");
            }
        }
        out
    }
}

/// The shortest URL part [`WebhookUrl::scrub`] hides.
pub const SCRUB_MIN: usize = 6;

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.to_string(), "<redacted>");
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
        assert_eq!(secret.expose(), b"hunter2");
    }

    #[test]
    fn urls_are_checked_and_printed_without_their_token() {
        let url = WebhookUrl::parse("https://hooks.example/services/T0/B0/token123?x=1").unwrap();
        assert_eq!(url.redacted(), "https://hooks.example/…");
        assert!(!format!("{url:?} {url}").contains("token123"));
        assert_eq!(url.expose().path(), "/services/T0/B0/token123");
        let url = WebhookUrl::parse("http://127.0.0.1:9093/").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:9093/");

        assert_eq!(
            WebhookUrl::parse("ftp://files.example/x").unwrap_err(),
            WebhookUrlError::Scheme {
                scheme: "ftp".into()
            }
        );
        let err = WebhookUrl::parse("hooks.example/x").unwrap_err();
        assert!(matches!(err, WebhookUrlError::Parse(_)), "{err}");
        assert!(err.to_string().starts_with("not a URL"), "{err}");
        assert!(WebhookUrl::parse("https://").is_err());
    }

    #[test]
    fn error_texts_are_scrubbed_of_every_part_of_the_url() {
        let url = WebhookUrl::parse(
            "https://bot:pa55word@hooks.example/services/T0/tok3n-abcdef?key=qu3ry-secret",
        )
        .unwrap();
        let text = "error sending request for url (https://bot:pa55word@hooks.example/services/T0/tok3n-abcdef?key=qu3ry-secret): \
                    token tok3n-abcdef, key qu3ry-secret, user pa55word; HTTP 500";
        let clean = url.scrub(text);
        for secret in ["tok3n-abcdef", "qu3ry-secret", "pa55word", "/services"] {
            assert!(!clean.contains(secret), "{secret} left in {clean}");
        }
        assert!(clean.ends_with("HTTP 500"), "{clean}");
        assert_eq!(
            url.scrub("the receiver answered HTTP 500"),
            "the receiver answered HTTP 500"
        );
    }
}
