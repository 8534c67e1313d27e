//! 3. The domain core, pure: money, payment settings and their overrides, payment-method
//!    references. No axum, lapin or sqlx here; the repository module does the I/O.

pub mod events;
pub mod invoice;
pub mod methods;
pub mod money;
pub mod payment;
pub mod settings;
