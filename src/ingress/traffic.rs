//! What each endpoint received in the last hour, in this process: requests queued and refused a
//! minute at a time, and when it last queued one. The console shows it per connection (the
//! `/metrics` counters are per provider only, and a connection's id is no label: a platform has
//! as many as it has tenants). Only known endpoints are kept: the platform's of each provider,
//! and the connections whose secrets the receiver holds; a request to an unknown one is counted
//! in `/metrics` alone, so nothing a stranger sends grows this.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::provider::Provider;

/// Minutes kept: the last hour.
const MINUTES: usize = 60;

/// One minute's requests.
#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: i64,
    queued: u32,
    refused: u32,
}

#[derive(Debug)]
struct Endpoint {
    minutes: [Minute; MINUTES],
    last_queued: Option<DateTime<Utc>>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            minutes: [Minute::default(); MINUTES],
            last_queued: None,
        }
    }
}

/// An endpoint's last hour, as the console shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastHour {
    pub queued: u64,
    pub refused: u64,
    pub last_queued: Option<DateTime<Utc>>,
}

impl LastHour {
    /// The share of requests refused, in percent (none: no request).
    pub fn refused_percent(&self) -> Option<f64> {
        let all = self.queued + self.refused;
        (all > 0).then(|| self.refused as f64 * 100.0 / all as f64)
    }
}

/// Every known endpoint's last hour.
#[derive(Debug, Default)]
pub struct Traffic {
    endpoints: Mutex<HashMap<String, Endpoint>>,
}

/// An endpoint's key: `stripe` for the platform's, `stripe/conn_…` for a connection's.
fn key(provider: Provider, connection: Option<&str>) -> String {
    match connection {
        Some(id) => format!("{}/{id}", provider.wire_name()),
        None => provider.wire_name().to_owned(),
    }
}

impl Traffic {
    /// Counts one request to a known endpoint at `now`.
    pub fn record(
        &self,
        provider: Provider,
        connection: Option<&str>,
        queued: bool,
        now: DateTime<Utc>,
    ) {
        let minute = now.timestamp().div_euclid(60);
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoint = endpoints.entry(key(provider, connection)).or_default();
        let slot = &mut endpoint.minutes[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.at != minute {
            *slot = Minute {
                at: minute,
                ..Minute::default()
            };
        }
        if queued {
            slot.queued += 1;
            endpoint.last_queued = Some(now);
        } else {
            slot.refused += 1;
        }
    }

    /// Every known endpoint's requests in the hour before `now`, added up.
    pub fn all_last_hour(&self, now: DateTime<Utc>) -> LastHour {
        let keys: Vec<String> = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect();
        keys.iter().fold(LastHour::default(), |total, key| {
            let hour = self.of_key(key, now);
            LastHour {
                queued: total.queued + hour.queued,
                refused: total.refused + hour.refused,
                last_queued: total.last_queued.max(hour.last_queued),
            }
        })
    }

    /// The endpoint's requests in the hour before `now`.
    pub fn last_hour(
        &self,
        provider: Provider,
        connection: Option<&str>,
        now: DateTime<Utc>,
    ) -> LastHour {
        self.of_key(&key(provider, connection), now)
    }

    fn of_key(&self, key: &str, now: DateTime<Utc>) -> LastHour {
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(endpoint) = endpoints.get(key) else {
            return LastHour::default();
        };
        let current = now.timestamp().div_euclid(60);
        let recent = endpoint
            .minutes
            .iter()
            .filter(|minute| minute.at > current - MINUTES as i64 && minute.at <= current);
        let (queued, refused) = recent.fold((0, 0), |(queued, refused), minute| {
            (
                queued + u64::from(minute.queued),
                refused + u64::from(minute.refused),
            )
        });
        LastHour {
            queued,
            refused,
            last_queued: endpoint.last_queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_hour_is_counted_per_endpoint_and_forgets_what_is_older() {
        let traffic = Traffic::default();
        let start = Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap();
        traffic.record(Provider::Stripe, Some("conn_a"), true, start);
        traffic.record(Provider::Stripe, Some("conn_a"), false, start);
        traffic.record(Provider::Stripe, None, true, start);
        let later = start + chrono::Duration::minutes(30);
        traffic.record(Provider::Stripe, Some("conn_a"), false, later);
        let hour = traffic.last_hour(Provider::Stripe, Some("conn_a"), later);
        assert_eq!((hour.queued, hour.refused), (1, 2));
        assert_eq!(hour.last_queued, Some(start));
        assert_eq!(hour.refused_percent().map(f64::round), Some(67.0));
        // An hour and a minute after the start, only the later refusal is left.
        let after = start + chrono::Duration::minutes(61);
        let hour = traffic.last_hour(Provider::Stripe, Some("conn_a"), after);
        assert_eq!((hour.queued, hour.refused), (0, 1));
        // A slot reused a full hour later starts again from nothing.
        traffic.record(
            Provider::Stripe,
            Some("conn_a"),
            true,
            start + chrono::Duration::minutes(60),
        );
        let hour = traffic.last_hour(Provider::Stripe, Some("conn_a"), after);
        assert_eq!((hour.queued, hour.refused), (1, 1));
        assert_eq!(
            traffic.last_hour(Provider::GoCardless, None, after),
            LastHour::default()
        );
    }
}
