//! Provider secrets for `settle connections add` and `connections rotate-secret --new`: from the
//! environment or standard input, never the command line. Any user of the host can read a
//! process's arguments in `/proc/<pid>/cmdline`, and shells and job specs keep them; a process's
//! environment is readable by its owner only, and standard input leaves nothing behind.
//!
//! Errors say what is missing, or which line of standard input is wrong, never a value: a line
//! that does not parse may be a secret pasted on its own.

use std::io::{BufRead, IsTerminal, Read};

use anyhow::{Context, bail};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// `connections add`: the connection's webhook secrets, comma-separated, the newest first.
pub const WEBHOOK_SECRETS_VAR: &str = "SETTLE_CONNECTION_WEBHOOK_SECRETS";
/// `connections add`: the provider API key settle reads the connection's events and payouts with.
pub const API_KEY_VAR: &str = "SETTLE_CONNECTION_API_KEY";
/// `connections rotate-secret --new`: the new webhook secret.
pub const NEW_WEBHOOK_SECRET_VAR: &str = "SETTLE_CONNECTION_WEBHOOK_SECRET";

/// More than any set of secrets: the buffer is reserved whole before reading, so it is never
/// reallocated, which would leave a copy of what was read so far behind, unwiped.
const MAX_STDIN_BYTES: usize = 64 * 1024;

/// What `connections add` seals and stores. Either may be absent: a Connect account's events can
/// come through the platform's endpoint, and the platform's key can read its events.
#[derive(Default)]
pub struct ConnectionSecrets {
    /// The newest first: `rotate-secret --new` keeps the first beside the new one.
    pub webhook_secrets: Vec<SecretString>,
    pub api_key: Option<SecretString>,
}

/// `connections add`'s secrets: from standard input with `--secrets-from-stdin`, otherwise from
/// `SETTLE_CONNECTION_WEBHOOK_SECRETS` and `SETTLE_CONNECTION_API_KEY` (none at all is allowed).
pub fn connection_secrets(from_stdin: bool) -> anyhow::Result<ConnectionSecrets> {
    if from_stdin {
        refuse_two_sources(&[WEBHOOK_SECRETS_VAR, API_KEY_VAR], "--secrets-from-stdin")?;
        let text = read_stdin(
            "the connection's secrets, `webhook_secret=…` and `api_key=…` lines, then Ctrl-D",
            |stdin, text| stdin.read_to_string(text),
        )?;
        let secrets = parse_connection_secrets(&text)?;
        if secrets.webhook_secrets.is_empty() && secrets.api_key.is_none() {
            bail!("standard input holds no `webhook_secret=…` or `api_key=…` line");
        }
        return Ok(secrets);
    }
    // The singular is rotate-secret's: given here it would be ignored, and the connection added
    // without the secret its endpoint is meant to verify with.
    if var(NEW_WEBHOOK_SECRET_VAR)?.is_some() {
        bail!(
            "{NEW_WEBHOOK_SECRET_VAR} is rotate-secret's; connections add reads {WEBHOOK_SECRETS_VAR}"
        );
    }
    Ok(ConnectionSecrets {
        webhook_secrets: var(WEBHOOK_SECRETS_VAR)?
            .map(|list| split_list(&list))
            .unwrap_or_default(),
        api_key: var(API_KEY_VAR)?,
    })
}

/// `rotate-secret --new`'s secret: the first line of standard input with `--secret-from-stdin`,
/// otherwise `SETTLE_CONNECTION_WEBHOOK_SECRET`.
pub fn new_webhook_secret(from_stdin: bool) -> anyhow::Result<SecretString> {
    if !from_stdin {
        return var(NEW_WEBHOOK_SECRET_VAR)?.with_context(|| {
            format!("no webhook secret: set {NEW_WEBHOOK_SECRET_VAR} or pass --secret-from-stdin")
        });
    }
    refuse_two_sources(&[NEW_WEBHOOK_SECRET_VAR], "--secret-from-stdin")?;
    let line = read_stdin("the new webhook secret, then Enter", |stdin, line| {
        stdin.read_line(line)
    })?;
    match line.trim() {
        "" => bail!("no webhook secret: the first line of standard input is empty"),
        secret => Ok(SecretString::from(secret)),
    }
}

/// `operators create --password-stdin`'s password: the first line of standard input.
pub fn operator_password() -> anyhow::Result<Zeroizing<String>> {
    let line = read_stdin("the operator's password, then Enter", |stdin, line| {
        stdin.read_line(line)
    })?;
    let password = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if password.chars().count() < 12 {
        bail!("the password is shorter than 12 characters");
    }
    Ok(password)
}

/// With secrets on standard input, one left in the environment (from an earlier command, say)
/// would be ignored: refused, so the operator knows which secret is stored.
fn refuse_two_sources(vars: &[&str], flag: &str) -> anyhow::Result<()> {
    for name in vars {
        if var(name)?.is_some() {
            bail!("{flag} and {name} both give secrets: unset {name}, or leave out {flag}");
        }
    }
    Ok(())
}

/// An environment variable; unset and blank are both none.
fn var(name: &str) -> anyhow::Result<Option<SecretString>> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(SecretString::from(value.trim()))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not UTF-8"),
    }
}

/// Reads standard input with `read` into a buffer wiped when dropped, after saying what to type
/// when it is a terminal (otherwise the command would seem to hang).
fn read_stdin(
    prompt: &str,
    read: impl FnOnce(&mut dyn BufRead, &mut String) -> std::io::Result<usize>,
) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("settle: reading {prompt}");
    }
    let mut text = Zeroizing::new(String::with_capacity(MAX_STDIN_BYTES));
    read(&mut stdin.lock().take(MAX_STDIN_BYTES as u64), &mut text)
        .context("reading standard input")?;
    if text.len() >= MAX_STDIN_BYTES {
        bail!("standard input is longer than {MAX_STDIN_BYTES} bytes: not a set of secrets");
    }
    Ok(text)
}

/// `SETTLE_CONNECTION_WEBHOOK_SECRETS`: comma-separated, as `STRIPE_WEBHOOK_SECRETS` is.
fn split_list(list: &SecretString) -> Vec<SecretString> {
    secrecy::ExposeSecret::expose_secret(list)
        .split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(SecretString::from)
        .collect()
}

/// `--secrets-from-stdin`'s format: lines `webhook_secret=…` (repeated while rotating, the newest
/// first) and at most one `api_key=…`; blank lines, and whitespace around a line, a name or a
/// value, are ignored. A value runs to the end of its line, so it may hold `=` or `,`.
fn parse_connection_secrets(text: &str) -> anyhow::Result<ConnectionSecrets> {
    let mut secrets = ConnectionSecrets::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let (name, value) = line
            .split_once('=')
            .map(|(name, value)| (name.trim(), value.trim()))
            .unwrap_or_default();
        if matches!(name, "webhook_secret" | "api_key") && value.is_empty() {
            bail!("standard input, line {number}: `{name}=` has no value");
        }
        match name {
            "webhook_secret" => secrets.webhook_secrets.push(SecretString::from(value)),
            "api_key" if secrets.api_key.is_some() => {
                bail!("standard input, line {number}: a second `api_key=`")
            }
            "api_key" => secrets.api_key = Some(SecretString::from(value)),
            _ => bail!("standard input, line {number}: not `webhook_secret=…` or `api_key=…`"),
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn exposed(secrets: &[SecretString]) -> Vec<&str> {
        secrets.iter().map(ExposeSecret::expose_secret).collect()
    }

    #[test]
    fn stdin_secrets_are_read_line_by_line_whitespace_and_blank_lines_ignored() {
        let text = "\n  webhook_secret = whsec_new \r\nwebhook_secret=whsec_old\n\n\tapi_key=sk_test_a=b,c\n";
        let secrets = parse_connection_secrets(text).unwrap();
        assert_eq!(
            exposed(&secrets.webhook_secrets),
            ["whsec_new", "whsec_old"]
        );
        assert_eq!(
            secrets.api_key.as_ref().map(ExposeSecret::expose_secret),
            Some("sk_test_a=b,c")
        );
        let none = parse_connection_secrets(" \n\n").unwrap();
        assert!(none.webhook_secrets.is_empty() && none.api_key.is_none());
    }

    #[test]
    fn a_bad_stdin_line_is_refused_by_its_number_never_its_text() {
        for (text, expected) in [
            (
                "webhook_secret=whsec_ok\n\nwhsec_pasted_bare\n",
                "line 3: not",
            ),
            ("whsec_pasted=with_equals", "line 1: not"),
            ("webhook_secrets=whsec_pasted", "line 1: not"),
            (
                "api_key=sk_pasted\napi_key=sk_pasted_again",
                "line 2: a second",
            ),
            (
                "webhook_secret=whsec_pasted\nwebhook_secret= ",
                "line 2: `webhook_secret=` has no value",
            ),
        ] {
            let error = parse_connection_secrets(text).err().unwrap().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("pasted"), "{error}");
        }
    }

    #[test]
    fn the_environments_list_is_comma_separated_blanks_dropped() {
        let list = SecretString::from(" whsec_new, whsec_old ,,");
        assert_eq!(exposed(&split_list(&list)), ["whsec_new", "whsec_old"]);
    }
}
