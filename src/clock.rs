//! The time automatic charging decides by. A process reads the system clock; a test moves it
//! forward (`Clock::adjustable`, `advance`), so that a retry three days out comes due without
//! anyone waiting three days, through the same code production runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds ahead of the system clock; `None`: the system clock itself.
    ahead_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock `advance` moves forward; its clones move with it.
    pub fn adjustable() -> Self {
        Self {
            ahead_ms: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Moves an adjustable clock `by` forward; the system clock does not move.
    pub fn advance(&self, by: Duration) {
        if let Some(ahead) = &self.ahead_ms {
            ahead.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let ahead = self
            .ahead_ms
            .as_ref()
            .map_or(0, |ahead| ahead.load(Ordering::SeqCst));
        Utc::now() + Duration::milliseconds(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_with_its_clones_and_the_system_clock_does_not() {
        let clock = Clock::adjustable();
        let clone = clock.clone();
        clock.advance(Duration::days(3));
        assert!(clone.now() - Utc::now() > Duration::days(3) - Duration::minutes(1));
        let system = Clock::system();
        system.advance(Duration::days(3));
        assert!(system.now() - Utc::now() < Duration::minutes(1));
    }
}
