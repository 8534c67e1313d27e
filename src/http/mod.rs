//! Web plumbing below both HTTP edges (provider webhooks and the internal API): the one error
//! body every route answers with, and the probes every role serves.

pub mod error;
pub mod probes;
pub mod server;

pub use self::error::{error_body, unavailable};
