//! Stripe's request encoding: `application/x-www-form-urlencoded` with deep-object keys
//! (`payload[value]=12`, `tiers[0][up_to]=inf`, `expand[]=tiers`), decoded into a JSON tree whose
//! leaves are strings, as Stripe reads them. Query strings use the same encoding.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter key {0:?}")]
pub struct BadKey(pub String);

/// Splits `a[b][0][]` into `["a", "b", "0", ""]`.
fn segments(key: &str) -> Result<Vec<&str>, BadKey> {
    let bad = || BadKey(key.to_string());
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return Err(bad());
    }
    let mut out = vec![head];
    while !rest.is_empty() {
        let close = rest.find(']').ok_or_else(bad)?;
        if !rest.starts_with('[') {
            return Err(bad());
        }
        out.push(&rest[1..close]);
        rest = &rest[close + 1..];
    }
    Ok(out)
}

fn insert(
    node: &mut Map<String, Value>,
    path: &[&str],
    value: String,
    key: &str,
) -> Result<(), BadKey> {
    let (first, rest) = path.split_first().expect("a path has a head");
    let name = if first.is_empty() { node.len().to_string() } else { (*first).to_string() };
    if rest.is_empty() {
        node.insert(name, Value::String(value));
        return Ok(());
    }
    let child = node.entry(name).or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(map) => insert(map, rest, value, key),
        _ => Err(BadKey(key.to_string())),
    }
}

/// Objects whose keys are all indices become arrays, in index order.
fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed = !map.is_empty()
                && map.keys().all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
            if indexed {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(usize::MAX), arrays(v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

/// Decodes a form body or query string.
pub fn parse(input: &[u8]) -> Result<Value, BadKey> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(input) {
        let path = segments(&key)?;
        insert(&mut root, &path, value.into_owned(), &key)?;
    }
    // Only nested objects of indices become arrays: the top level is always the parameters by
    // name (`0=a` is a parameter named "0"; found by the fuzz target `form`).
    Ok(Value::Object(root.into_iter().map(|(k, v)| (k, arrays(v))).collect()))
}

/// What the fuzz target `form` runs on each input, and the test below on each input of its
/// corpus: decoding never panics, and what it decodes is an object.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(value) = parse(data) {
        assert!(value.is_object(), "a form decoded to {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_objects_and_arrays() {
        let v = parse(b"event_name=api&payload[stripe_customer_id]=cus_1&payload[value]=12&tiers[0][up_to]=100&tiers[1][up_to]=inf&tiers[0][unit_amount_decimal]=0.2&expand[]=tiers&expand[]=product&name=a+b%5B").unwrap();
        assert_eq!(
            v,
            json!({
                "event_name": "api",
                "payload": {"stripe_customer_id": "cus_1", "value": "12"},
                "tiers": [{"up_to": "100", "unit_amount_decimal": "0.2"}, {"up_to": "inf"}],
                "expand": ["tiers", "product"],
                "name": "a b[",
            })
        );
        // Percent-encoded brackets decode the same.
        assert_eq!(parse(b"payload%5Bvalue%5D=1").unwrap(), json!({"payload": {"value": "1"}}));
        assert!(parse(b"[x]=1").is_err());
        assert!(parse(b"a[b=1").is_err());
        assert!(parse(b"a=1&a[b]=2").is_err());
        assert_eq!(parse(b"1&").unwrap(), json!({"1": ""}));
    }

    /// Every input the fuzzer kept is a regression test.
    #[test]
    fn the_fuzz_corpus_decodes_without_panicking() {
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/form");
        let mut inputs = 0;
        for entry in std::fs::read_dir(corpus).expect("the corpus is in the repository") {
            fuzz_parse(&std::fs::read(entry.unwrap().path()).unwrap());
            inputs += 1;
        }
        assert!(inputs >= 10, "fuzz/corpus/form holds only {inputs} inputs");
    }
}
