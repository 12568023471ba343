//! Reading request parameters, decoded by [`crate::form`] into a JSON tree whose leaves are
//! strings, as Stripe reads them.

use serde_json::{Map, Value};

use super::StripeError;

/// A string parameter, if given.
pub(super) fn optional_param(params: &Value, name: &str) -> Option<String> {
    params.get(name).and_then(Value::as_str).map(String::from)
}

/// A string parameter that must be given and not empty.
pub(super) fn required_param(params: &Value, name: &str) -> Result<String, StripeError> {
    optional_param(params, name).filter(|s| !s.is_empty()).ok_or_else(|| StripeError::missing(name))
}

/// An integer parameter, if given; one that is not an integer is refused.
pub(super) fn integer_param(params: &Value, name: &str) -> Result<Option<i64>, StripeError> {
    match optional_param(params, name) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| StripeError::invalid(name, format!("Invalid integer: {s}"))),
    }
}

/// The `metadata` parameter as an object (`{}` when not given or not an object).
pub(super) fn metadata_param(params: &Value) -> Map<String, Value> {
    match params.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// A string at a JSON pointer (`/default_aggregation/formula`) in the parameters.
pub(super) fn nested_param<'a>(params: &'a Value, pointer: &str) -> Option<&'a str> {
    params.pointer(pointer).and_then(Value::as_str)
}
