//! The templates' own filter: `{{ status|label }}`, a value as its JSON names it (`page::label`).

use super::page;

#[askama::filter_fn]
pub fn label<T: serde::Serialize>(value: T, _: &dyn askama::Values) -> askama::Result<String> {
    Ok(page::label(&value))
}
