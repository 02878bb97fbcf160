//! The config file as it may be shown (`GET /api/v1/config`): every value the
//! file sets, with each secret replaced, and the list of what was replaced.
//!
//! The secrets are the web tokens (`[web] read_token`, `write_token`), each
//! webhook's HMAC `secret`, and each webhook's `url` (receivers keep their
//! credentials in the path, the query or the user info: the URL keeps only
//! its scheme, host and port). Any other key whose name says it holds a
//! credential (`token`, `secret`, `password`) is replaced too, so a key added
//! later is hidden before anyone remembers to list it. Comments are not
//! kept: they may hold anything.

use crate::alerts::WebhookUrl;

/// What a secret's value becomes. Shorter than the 16 characters a token
/// needs, so a shown config loaded as it is fails validation instead of
/// guarding the API with a known token.
pub const REDACTED: &str = "<redacted>";

/// Key names that hold a credential wherever they appear.
const SECRET_WORDS: [&str; 3] = ["token", "secret", "password"];

/// A config file with its secrets replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct RedactedConfig {
    pub table: toml::Table,
    /// The keys replaced, in key order: `web.write_token`, `webhook[0].url`.
    pub redacted: Vec<String>,
}

impl RedactedConfig {
    /// The table as a TOML file.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.table)
    }
}

/// Parses config `text` (already validated, so it parses) and replaces its secrets.
pub fn redact(text: &str) -> Result<RedactedConfig, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    let mut redacted = Vec::new();
    walk(&mut table, "", &mut redacted);
    Ok(RedactedConfig { table, redacted })
}

fn walk(table: &mut toml::Table, prefix: &str, redacted: &mut Vec<String>) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => walk(inner, &path, redacted),
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        walk(inner, &format!("{path}[{i}]"), redacted);
                    }
                }
                if is_secret_name(key) && !items.is_empty() {
                    *value = toml::Value::String(REDACTED.to_owned());
                    redacted.push(path);
                }
            }
            _ if is_webhook_url(prefix, key) => {
                let Some(url) = value.as_str() else { continue };
                // A URL that does not parse would not have validated; hide it whole.
                let shown = WebhookUrl::parse(url)
                    .map(|u| u.redacted().replace('…', REDACTED))
                    .unwrap_or_else(|_| REDACTED.to_owned());
                if shown != url {
                    *value = toml::Value::String(shown);
                    redacted.push(path);
                }
            }
            _ if is_secret_name(key) => {
                *value = toml::Value::String(REDACTED.to_owned());
                redacted.push(path);
            }
            _ => {}
        }
    }
}

fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// `url` of a `[[webhook]]` or `[[remote_write]]` table (`webhook[3]`): both
/// kinds of receiver may keep a credential in the URL.
fn is_webhook_url(prefix: &str, key: &str) -> bool {
    key == "url" && (prefix.starts_with("webhook[") || prefix.starts_with("remote_write["))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{keys_of, RawRemoteWrite, RawWeb, RawWebhook};
    use crate::config::Config;

    const SECRETS: &str = r#"
[web]
listen = "127.0.0.1:9470"
read_token = "read-secret-0123456789"
write_token = "write-secret-0123456789"

[[webhook]]
name = "slack"
format = "slack"
url = "https://hooks.slack.example/services/T000/B000/slack-secret-path"
secret = "hmac-secret-0123456789"

[[webhook]]
name = "am"
format = "alertmanager"
url = "https://am-user:am-secret-password@am.example:9093/api?token=query-secret"

[[webhook]]
name = "plain"
url = "http://127.0.0.1:9000/"

[[target]]
name = "gw"
host = "198.18.0.1"
"#;

    #[test]
    fn every_secret_is_replaced_and_listed() {
        Config::parse(SECRETS, "hopwatch.toml").expect("the test config validates");
        let shown = redact(SECRETS).unwrap();
        assert_eq!(
            shown.redacted,
            [
                "web.read_token",
                "web.write_token",
                "webhook[0].secret",
                "webhook[0].url",
                "webhook[1].url",
            ]
        );
        let text = shown.to_toml().unwrap();
        let json = serde_json::to_string(&shown.table).unwrap();
        for secret in [
            "read-secret",
            "write-secret",
            "slack-secret-path",
            "T000",
            "hmac-secret",
            "am-user",
            "am-secret-password",
            "query-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        let web = shown.table["web"].as_table().unwrap();
        assert_eq!(web["write_token"].as_str(), Some(REDACTED));
        assert_eq!(web["listen"].as_str(), Some("127.0.0.1:9470"));
        let hooks = shown.table["webhook"].as_array().unwrap();
        assert_eq!(
            hooks[0]["url"].as_str(),
            Some("https://hooks.slack.example/<redacted>")
        );
        assert_eq!(
            hooks[1]["url"].as_str(),
            Some("https://am.example:9093/<redacted>")
        );
        assert_eq!(
            hooks[2]["url"].as_str(),
            Some("http://127.0.0.1:9000/"),
            "a URL with nothing secret is shown as it is"
        );
        assert_eq!(
            shown.table["target"][0]["host"].as_str(),
            Some("198.18.0.1")
        );
        // Loaded as it is, the shown config fails rather than running with a
        // known token.
        let err = Config::parse(&text, "shown.toml").unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }

    /// Every key of `[web]` and `[[webhook]]` that holds a credential is one
    /// the rules above catch; a new one must be added to them (or named so).
    #[test]
    fn the_secret_keys_of_the_config_are_covered() {
        let secret_web = ["read_token", "write_token"];
        for key in keys_of::<RawWeb>() {
            assert_eq!(is_secret_name(key), secret_web.contains(key), "[web] {key}");
        }
        for key in keys_of::<RawWebhook>() {
            let caught = is_secret_name(key) || is_webhook_url("webhook[0]", key);
            assert_eq!(caught, ["url", "secret"].contains(key), "[[webhook]] {key}");
        }
    }

    #[test]
    fn remote_write_credentials_are_replaced() {
        let text = "[[remote_write]]\nurl = \"https://rw-user:rw-pass@prom.example/api/v1/write?key=rw-key\"\n\
                    username = \"u\"\npassword = \"rw-password\"\n\n\
                    [[remote_write]]\nurl = \"http://prom.example:9090/api/v1/write\"\nbearer_token = \"rw-token\"\n";
        Config::parse(text, "hopwatch.toml").expect("the test config validates");
        let shown = redact(text).unwrap();
        assert_eq!(
            shown.redacted,
            [
                "remote_write[0].password",
                "remote_write[0].url",
                "remote_write[1].bearer_token",
                "remote_write[1].url",
            ]
        );
        let out = shown.to_toml().unwrap();
        for secret in ["rw-user", "rw-pass", "rw-key", "rw-password", "rw-token"] {
            assert!(!out.contains(secret), "{secret} in\n{out}");
        }
        for key in keys_of::<RawRemoteWrite>() {
            let caught = is_secret_name(key) || is_webhook_url("remote_write[0]", key);
            assert_eq!(
                caught,
                ["url", "password", "bearer_token"].contains(key),
                "[[remote_write]] {key}"
            );
        }
    }

    #[test]
    fn a_config_without_secrets_is_shown_whole() {
        let text =
            "[defaults]\ninterval = \"2s\"\n\n[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\n";
        let shown = redact(text).unwrap();
        assert!(shown.redacted.is_empty());
        assert_eq!(shown.table, text.parse::<toml::Table>().unwrap());
    }
}
