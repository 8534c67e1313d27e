//! What happened to a provider event: recorded in the inbox with the event, counted in
//! `settle_worker_messages_total{result}` and logged.

/// The outcome of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects were written.
    Applied,
    /// Already in the inbox: delivered before, nothing done.
    Duplicate,
    /// Older than the last event applied to its payment or payment method: recorded, not applied.
    Stale,
    /// Not older, but a move the transition table refuses (a pending event after a success):
    /// recorded, not applied.
    Unchanged,
    /// An event worth keeping that changes nothing (GoCardless `chargeback_settled`, …).
    Recorded,
    /// Not for settle (an unknown type, a payment method that is not ours): recorded with the
    /// reason.
    Ignored(&'static str),
    /// A payment event that names no invoice, for a payment nobody has registered yet: kept with
    /// the provider payment id it waits for, and applied by the registration of that payment
    /// (`POST /invoices/{id}/payments`).
    Unmatched,
}

impl Outcome {
    /// The stored and metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Unchanged => "unchanged",
            Self::Recorded => "recorded",
            Self::Ignored(_) => "ignored",
            Self::Unmatched => "unmatched",
        }
    }

    /// Why an event was ignored.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Ignored(reason) => Some(reason),
            _ => None,
        }
    }
}
