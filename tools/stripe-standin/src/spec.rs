//! Stripe's OpenAPI description and sample objects, as shipped in `stripe/`: the parameters each
//! endpoint takes, and the complete objects the stand-in starts every answer from.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use serde_json::Value;

const OPENAPI: &str = include_str!("../stripe/openapi-billing-subset.json");
const FIXTURES: &str = include_str!("../stripe/fixtures-subset.json");

/// The top-level parameters of each (method, path template), e.g. ("post", "/v1/billing/meters").
static PARAMS: LazyLock<HashMap<(String, String), BTreeSet<String>>> = LazyLock::new(|| {
    let spec: Value =
        serde_json::from_str(OPENAPI).expect("the shipped OpenAPI description is JSON");
    let mut out = HashMap::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let mut names: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect();
            if let Some(props) = op["requestBody"]["content"]["application/x-www-form-urlencoded"]
                ["schema"]["properties"]
                .as_object()
            {
                names.extend(props.keys().cloned());
            }
            out.insert((method.clone(), path.clone()), names);
        }
    }
    out
});

static SAMPLES: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str::<Value>(FIXTURES).expect("the shipped fixtures are JSON")["resources"]
        .clone()
});

/// The parameters Stripe accepts at `method path_template`, or `None` for an endpoint the
/// description does not have.
pub fn params(method: &str, path_template: &str) -> Option<&'static BTreeSet<String>> {
    PARAMS.get(&(method.to_ascii_lowercase(), path_template.to_string()))
}

/// Stripe's sample object of `kind` (`"customer"`, `"billing.meter"`, ...): every field present.
pub fn sample(kind: &str) -> Value {
    SAMPLES.get(kind).cloned().unwrap_or_else(|| panic!("no Stripe sample for {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_has_the_endpoints_tally_uses() {
        let p = params("POST", "/v1/billing/meter_events").unwrap();
        for name in ["event_name", "payload", "identifier", "timestamp"] {
            assert!(p.contains(name), "{name}");
        }
        assert!(params("get", "/v1/billing/meters/{id}/event_summaries")
            .unwrap()
            .contains("customer"));
        assert!(params("post", "/v1/prices").unwrap().contains("tiers"));
        assert!(params("post", "/v1/billing/meter_events/nothing").is_none());
        assert_eq!(sample("billing.meter")["object"], "billing.meter");
    }
}
