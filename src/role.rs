//! What a process does: `serve` takes HTTP traffic, `worker` reconciles, `run` does both.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
    Run,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Worker => "worker",
            Self::Run => "run",
        }
    }

    /// Serves the provider webhooks and the API.
    pub fn takes_webhooks(self) -> bool {
        matches!(self, Self::Serve | Self::Run)
    }

    /// Runs the consumers, the outbox relay and the notification sender.
    pub fn consumes(self) -> bool {
        matches!(self, Self::Worker | Self::Run)
    }

    /// `serve` exists to take webhooks, which needs only the broker: a database outage must not
    /// make it unready, or a load balancer would stop intake exactly when it should keep going.
    pub fn needs_database_to_be_ready(self) -> bool {
        self.consumes()
    }
}
