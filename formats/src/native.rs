//! Tally's own format: `TraceCompleted` v1 events as one JSON object, a JSON array of them, or
//! NDJSON (one per line; chosen by the content type).

use serde::Deserialize;
use serde_json::value::RawValue;
use tally_schemas::{FieldError, FieldErrorCode, TraceCompletedV1};

use crate::{Decoded, FormatError};

/// Reads a body into one item per event, at most `max_events`.
pub fn decode(body: &[u8], ndjson: bool, max_events: usize) -> Result<Vec<Decoded>, FormatError> {
    Ok(split(body, ndjson, max_events)?.into_iter().map(decode_element).collect())
}

/// One element of a batch: the raw JSON of one event, or why its line could not be parsed.
pub type Element<'a> = Result<&'a RawValue, serde_json::Error>;

/// Splits a body into events. `ndjson` is chosen by the content type; otherwise the body is a
/// single JSON object or a JSON array of them.
pub fn split(
    body: &[u8],
    ndjson: bool,
    max_events: usize,
) -> Result<Vec<Element<'_>>, FormatError> {
    let text = std::str::from_utf8(body).map_err(|e| FormatError::NotJson(e.to_string()))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(FormatError::Empty);
    }
    // Events are counted as the body is split: one past `max_events` ends the reading, so a
    // body of many tiny events costs at most `max_events` slots, never one per element.
    let elements: Vec<Element<'_>> = if ndjson {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .take(max_events.saturating_add(1))
            .map(serde_json::from_str::<&RawValue>)
            .collect()
    } else if trimmed.starts_with('[') {
        array_elements(text, max_events)?.into_iter().map(Ok).collect()
    } else {
        let one: &RawValue =
            serde_json::from_str(text).map_err(|e| FormatError::NotJson(e.to_string()))?;
        vec![Ok(one)]
    };
    if elements.len() > max_events {
        return Err(FormatError::TooManyEvents { limit: max_events });
    }
    if ndjson && !elements.is_empty() && elements.iter().all(|e| e.is_err()) {
        let first = elements.into_iter().next().expect("non-empty").expect_err("all errors");
        return Err(FormatError::NotJson(first.to_string()));
    }
    if elements.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(elements)
}

/// The elements of a JSON array, at most `max`: reading stops at the one after.
fn array_elements(text: &str, max: usize) -> Result<Vec<&RawValue>, FormatError> {
    struct Bounded(usize);
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(element) = seq.next_element::<&RawValue>()? {
                if out.len() == self.0 {
                    return Err(serde::de::Error::custom(TOO_MANY));
                }
                out.push(element);
            }
            Ok(out)
        }
    }
    const TOO_MANY: &str = "tally: too many elements";
    let mut de = serde_json::Deserializer::from_str(text);
    let read = serde::Deserializer::deserialize_seq(&mut de, Bounded(max)).and_then(|items| {
        de.end()?;
        Ok(items)
    });
    read.map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            FormatError::TooManyEvents { limit: max }
        } else {
            FormatError::NotJson(e.to_string())
        }
    })
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
}

fn event_id_of(raw: &RawValue) -> Option<String> {
    let id: IdOnly<'_> = serde_json::from_str(raw.get()).ok()?;
    serde_json::from_str::<String>(id.event_id?.get()).ok()
}

/// Reads one element as an event of the `TraceCompleted` v1 shape.
pub fn decode_element(element: Element<'_>) -> Decoded {
    let raw = match element {
        Ok(raw) => raw,
        Err(e) => {
            return Decoded::rejected(
                None,
                FieldError::new(FieldErrorCode::MalformedEvent, format!("not a JSON value: {e}")),
            )
        }
    };
    if !raw.get().trim_start().starts_with('{') {
        return Decoded::rejected(
            None,
            FieldError::new(FieldErrorCode::MalformedEvent, "an event must be a JSON object"),
        );
    }
    match serde_json::from_str::<TraceCompletedV1>(raw.get()) {
        Ok(event) => Decoded { event_id: Some(event.event_id.clone()), event: Ok(event) },
        Err(e) => Decoded::rejected(event_id_of(raw), FieldError::from_serde(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(split(br#"{"a":1}"#, false, 10).unwrap().len(), 1);
        assert_eq!(split(br#"[{"a":1},{"b":2}, 3]"#, false, 10).unwrap().len(), 3);
        let nd = split(b"{\"a\":1}\n\n{oops\n{\"c\":3}\n", true, 10).unwrap();
        assert_eq!(nd.len(), 3);
        assert!(nd[1].is_err());
        assert!(matches!(split(b"not json", false, 10), Err(FormatError::NotJson(_))));
        assert!(matches!(split(b"nope\nnope", true, 10), Err(FormatError::NotJson(_))));
        assert_eq!(split(b"  ", false, 10).unwrap_err(), FormatError::Empty);
        assert_eq!(split(b"[]", false, 10).unwrap_err(), FormatError::Empty);
        assert_eq!(
            split(b"[1,2,3]", false, 2).unwrap_err(),
            FormatError::TooManyEvents { limit: 2 }
        );
        // Counted while splitting: the elements past the limit are not even read.
        assert_eq!(
            split(b"[1,2,3, this is not json", false, 2).unwrap_err(),
            FormatError::TooManyEvents { limit: 2 }
        );
        assert_eq!(
            split(b"1\n2\n3\n", true, 2).unwrap_err(),
            FormatError::TooManyEvents { limit: 2 }
        );
        assert!(matches!(split(b"[1,2] trailing", false, 10), Err(FormatError::NotJson(_))));
    }
}
