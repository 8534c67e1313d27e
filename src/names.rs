//! Names bounded where they are built. Ids built from provider data become AMQP names and header
//! values: a message id is an AMQP short string (at most 255 bytes; lapin's `From<&str>` panics
//! beyond), and a header's text travels in the message's one content-header frame, which must fit
//! the connection's frame size. A tenant chooses those ids (an event id as long as intake
//! accepts, refund, dispute and payout ids of any length) and the texts that error messages echo,
//! so each such name is built here, by one constructor that bounds it:
//! - kept as it is when it fits;
//! - otherwise a readable prefix (cut on a character boundary), `~`, and the hex SHA-256 of the
//!   whole.
//!
//! The same input always gives the same name, and two inputs share one only if their SHA-256
//! digests do: a message id stays the stable key subscribers dedupe on.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// An AMQP short string's limit, in bytes: message ids.
pub const MAX_SHORT_STRING_BYTES: usize = 255;

/// A header's text at most, in bytes: event ids and types (at most 255 bytes, see
/// `envelope::QueuedEvent::new`) fit whole; an error text that echoes a megabyte of event data
/// does not, and a dozen headers stay far below RabbitMQ's smallest frame size (4 KiB).
pub const MAX_HEADER_TEXT_BYTES: usize = 1024;

/// A hex SHA-256 and the `~` before it.
const DIGEST_SUFFIX_BYTES: usize = 1 + 64;

/// `text` as it is when it has at most `max` bytes, else its readable prefix, `~` and the hex
/// SHA-256 of the whole, `max` bytes at most. `max` leaves room for the digest.
fn bounded(text: String, max: usize) -> String {
    debug_assert!(max > DIGEST_SUFFIX_BYTES);
    if text.len() <= max {
        return text;
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let mut cut = max.saturating_sub(DIGEST_SUFFIX_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{digest}", &text[..cut])
}

/// A message id (the AMQP `message-id` property, and the `id` of a reconciliation event):
/// at most 255 bytes whatever it is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(bounded(id.into(), MAX_SHORT_STRING_BYTES))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A header's text value: at most `MAX_HEADER_TEXT_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderText(String);

impl HeaderText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for HeaderText {
    fn from(text: String) -> Self {
        Self(bounded(text, MAX_HEADER_TEXT_BYTES))
    }
}

impl From<&str> for HeaderText {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_fits_is_kept_as_it_is() {
        let id = "s".repeat(MAX_SHORT_STRING_BYTES);
        assert_eq!(MessageId::new(id.clone()).as_str(), id);
        assert_eq!(MessageId::new("stripe:evt_1").as_str(), "stripe:evt_1");
    }

    #[test]
    fn a_long_name_keeps_a_readable_prefix_and_a_digest_of_the_whole() {
        let long = format!("stripe:evt_{}:payment.succeeded", "a".repeat(300));
        let id = MessageId::new(long.clone());
        assert_eq!(id.as_str().len(), MAX_SHORT_STRING_BYTES);
        let (prefix, digest) = id.as_str().rsplit_once('~').unwrap();
        assert!(long.starts_with(prefix), "{prefix}");
        assert_eq!(digest, hex::encode(Sha256::digest(long.as_bytes())));
        // Stable: the same input, the same id (it is the key subscribers dedupe on).
        assert_eq!(MessageId::new(long.clone()), id);
        // Two long ids that share their prefix stay apart.
        let other = format!("{long}:re_2");
        assert_ne!(MessageId::new(other), id);
    }

    #[test]
    fn a_long_name_is_cut_on_a_character_boundary() {
        // Three-byte characters: no cut at 190 bytes falls between two of them by chance.
        for pad in 0..3 {
            let long = format!("{}{}", "x".repeat(pad), "€".repeat(200));
            let id = MessageId::new(long.clone());
            assert!(id.as_str().len() <= MAX_SHORT_STRING_BYTES);
            let (prefix, _) = id.as_str().rsplit_once('~').unwrap();
            assert!(long.starts_with(prefix));
        }
        let text = HeaderText::from("é".repeat(MAX_HEADER_TEXT_BYTES));
        assert!(text.as_str().len() <= MAX_HEADER_TEXT_BYTES);
    }
}
