//! Billing meters, meter events (validated, deduplicated by identifier for 24 hours),
//! meter event adjustments (cancellations) and meter event summaries.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::params::{integer_param, nested_param, optional_param, required_param};
use super::{list_page, new_id, to_json, List, Listed, Reply, Store, StripeError};
use super::{IDENTIFIER_WINDOW_SECS, MAX_EVENT_AGE_SECS, MAX_EVENT_AHEAD_SECS};

/// Stripe's Billing Meter object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    pub created: i64,
    pub customer_mapping: CustomerMapping,
    pub default_aggregation: DefaultAggregation,
    pub display_name: String,
    pub event_name: String,
    pub event_time_window: Option<String>,
    pub id: String,
    pub livemode: bool,
    /// Always `"billing.meter"`.
    pub object: String,
    /// `"active"` or `"inactive"`.
    pub status: String,
    pub status_transitions: MeterStatusTransitions,
    pub updated: i64,
    pub value_settings: ValueSettings,
}

impl Listed for Meter {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
}

/// Which payload key of a meter event names the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerMapping {
    pub event_payload_key: String,
    /// `"by_id"`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// How a meter aggregates its events: `sum`, `count` or `last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultAggregation {
    pub formula: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterStatusTransitions {
    pub deactivated_at: Option<i64>,
}

/// Which payload key of a meter event holds its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSettings {
    pub event_payload_key: String,
}

/// Stripe's Billing Meter Event object, as the create call answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterEvent {
    pub created: i64,
    pub event_name: String,
    pub identifier: String,
    pub livemode: bool,
    /// Always `"billing.meter_event"`.
    pub object: String,
    /// The payload as sent (its keys are the meter's to choose).
    pub payload: Map<String, Value>,
    pub timestamp: i64,
}

/// Stripe's Billing Meter Event Adjustment object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterEventAdjustment {
    pub cancel: AdjustmentCancel,
    pub event_name: String,
    pub livemode: bool,
    /// Always `"billing.meter_event_adjustment"`.
    pub object: String,
    /// `"complete"`.
    pub status: String,
    /// `"cancel"`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The meter event an adjustment cancels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdjustmentCancel {
    pub identifier: String,
}

/// Stripe's Billing Meter Event Summary object: a customer's aggregate over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterEventSummary {
    pub aggregated_value: i64,
    pub end_time: i64,
    pub id: String,
    pub livemode: bool,
    pub meter: String,
    /// Always `"billing.meter_event_summary"`.
    pub object: String,
    pub start_time: i64,
}

/// One meter event as the stand-in keeps it (not a Stripe object: Stripe keeps no such list
/// one can read back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedMeterEvent {
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    pub timestamp: i64,
    pub identifier: String,
    /// When the stand-in received it: the identifier stays unique for 24 hours from then.
    pub received: i64,
    pub cancelled: bool,
}

impl Store {
    pub fn create_meter(&mut self, params: &Value, now: i64) -> Reply {
        let display_name = required_param(params, "display_name")?;
        let event_name = required_param(params, "event_name")?;
        let formula = nested_param(params, "/default_aggregation/formula")
            .ok_or_else(|| StripeError::missing("default_aggregation[formula]"))?;
        if !["sum", "count", "last"].contains(&formula) {
            return Err(StripeError::invalid(
                "default_aggregation[formula]",
                "Invalid formula: must be one of count, last or sum",
            ));
        }
        if self.meters.values().any(|m| m.event_name == event_name && m.status == "active") {
            return Err(StripeError::invalid(
                "event_name",
                format!("An active meter with event_name `{event_name}` already exists."),
            ));
        }
        let customer_key = nested_param(params, "/customer_mapping/event_payload_key")
            .unwrap_or("stripe_customer_id");
        let value_key =
            nested_param(params, "/value_settings/event_payload_key").unwrap_or("value");
        let meter = Meter {
            created: now,
            customer_mapping: CustomerMapping {
                event_payload_key: customer_key.to_string(),
                kind: "by_id".into(),
            },
            default_aggregation: DefaultAggregation { formula: formula.to_string() },
            display_name,
            event_name,
            event_time_window: None,
            id: new_id("mtr_"),
            livemode: false,
            object: "billing.meter".into(),
            status: "active".into(),
            status_transitions: MeterStatusTransitions { deactivated_at: None },
            updated: now,
            value_settings: ValueSettings { event_payload_key: value_key.to_string() },
        };
        self.meters.insert(meter.id.clone(), meter.clone());
        Ok(to_json(&meter))
    }

    pub fn meter(&self, id: &str) -> Reply {
        self.meters.get(id).map(to_json).ok_or_else(|| StripeError::not_found("billing.meter", id))
    }

    pub fn list_meters(&self, params: &Value) -> Reply {
        let status = optional_param(params, "status");
        let meters = self
            .meters
            .values()
            .filter(|m| status.as_ref().is_none_or(|s| m.status == *s))
            .cloned()
            .collect();
        list_page("/v1/billing/meters", meters, params)
    }

    fn active_meter_for_event(&self, event_name: &str) -> Option<&Meter> {
        self.meters.values().find(|m| m.event_name == event_name && m.status == "active")
    }

    pub fn create_meter_event(&mut self, params: &Value, now: i64) -> Reply {
        let event_name = required_param(params, "event_name")?;
        let (customer_key, value_key) = match self.active_meter_for_event(&event_name) {
            Some(m) => (
                m.customer_mapping.event_payload_key.clone(),
                m.value_settings.event_payload_key.clone(),
            ),
            None => ("stripe_customer_id".to_string(), "value".to_string()),
        };
        let payload = params
            .get("payload")
            .and_then(Value::as_object)
            .ok_or_else(|| StripeError::missing("payload"))?;
        let customer = payload
            .get(&customer_key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| StripeError::missing(&format!("payload[{customer_key}]")))?
            .to_string();
        let raw_value = payload
            .get(&value_key)
            .and_then(Value::as_str)
            .ok_or_else(|| StripeError::missing(&format!("payload[{value_key}]")))?;
        let value: i64 = raw_value.parse().ok().filter(|v| *v >= 0).ok_or_else(|| {
            StripeError::invalid(
                &format!("payload[{value_key}]"),
                format!("The value `{raw_value}` must be a non-negative whole number."),
            )
        })?;
        let timestamp = integer_param(params, "timestamp")?.unwrap_or(now);
        if timestamp < now - MAX_EVENT_AGE_SECS || timestamp > now + MAX_EVENT_AHEAD_SECS {
            return Err(StripeError::invalid(
                "timestamp",
                "Timestamp must be within the past 35 calendar days and no more than 5 minutes \
                 in the future.",
            ));
        }
        let identifier = optional_param(params, "identifier").unwrap_or_else(|| new_id("mev_"));
        if let Some(&i) = self.identifiers.get(&identifier) {
            if now - self.meter_events[i].received < IDENTIFIER_WINDOW_SECS {
                return Err(StripeError::already_exists(
                    "identifier",
                    format!("An event with identifier `{identifier}` already exists."),
                ));
            }
        }
        self.identifiers.insert(identifier.clone(), self.meter_events.len());
        self.meter_events.push(ReceivedMeterEvent {
            event_name: event_name.clone(),
            customer,
            value,
            timestamp,
            identifier: identifier.clone(),
            received: now,
            cancelled: false,
        });
        Ok(to_json(&MeterEvent {
            created: now,
            event_name,
            identifier,
            livemode: false,
            object: "billing.meter_event".into(),
            payload: payload.clone(),
            timestamp,
        }))
    }

    /// `type=cancel`: cancels the event with `cancel[identifier]`, within 24 hours of its
    /// receipt.
    pub fn create_meter_event_adjustment(&mut self, params: &Value, now: i64) -> Reply {
        let event_name = required_param(params, "event_name")?;
        let kind = optional_param(params, "type").unwrap_or_else(|| "cancel".into());
        if kind != "cancel" {
            return Err(StripeError::invalid("type", "Invalid type: must be cancel"));
        }
        let identifier = nested_param(params, "/cancel/identifier")
            .ok_or_else(|| StripeError::missing("cancel[identifier]"))?;
        let &i = self.identifiers.get(identifier).ok_or_else(|| {
            StripeError::invalid(
                "cancel[identifier]",
                format!("No meter event with identifier `{identifier}`."),
            )
        })?;
        let event = &mut self.meter_events[i];
        if event.event_name != event_name {
            return Err(StripeError::invalid(
                "event_name",
                "The event_name does not match the event's.",
            ));
        }
        if now - event.received >= IDENTIFIER_WINDOW_SECS {
            return Err(StripeError::invalid(
                "cancel[identifier]",
                "Meter events can only be cancelled within 24 hours of being received.",
            ));
        }
        event.cancelled = true;
        Ok(to_json(&MeterEventAdjustment {
            cancel: AdjustmentCancel { identifier: identifier.to_string() },
            event_name,
            livemode: false,
            object: "billing.meter_event_adjustment".into(),
            status: "complete".into(),
            kind: "cancel".into(),
        }))
    }

    /// The sum (or count, or last value) of a customer's events on a meter in `[start, end)`.
    pub fn aggregate(&self, meter: &Meter, customer: &str, start: i64, end: i64) -> i64 {
        let events = self.meter_events.iter().filter(|e| {
            !e.cancelled
                && meter.event_name == e.event_name
                && e.customer == customer
                && e.timestamp >= start
                && e.timestamp < end
        });
        match meter.default_aggregation.formula.as_str() {
            "count" => events.count() as i64,
            "last" => events.max_by_key(|e| (e.timestamp, e.received)).map_or(0, |e| e.value),
            _ => events.map(|e| e.value).sum(),
        }
    }

    pub(super) fn find_meter(&self, id: &str) -> Result<&Meter, StripeError> {
        self.meters.get(id).ok_or_else(|| StripeError::not_found("billing.meter", id))
    }

    /// A customer's aggregates on a meter from `start_time` to `end_time`, in one window or by
    /// `value_grouping_window` (`hour`, `day`).
    pub fn meter_event_summaries(&self, meter_id: &str, params: &Value) -> Reply {
        let meter = self.find_meter(meter_id)?;
        let customer = required_param(params, "customer")?;
        let start = integer_param(params, "start_time")?
            .ok_or_else(|| StripeError::missing("start_time"))?;
        let end =
            integer_param(params, "end_time")?.ok_or_else(|| StripeError::missing("end_time"))?;
        if start % 60 != 0 || end % 60 != 0 {
            return Err(StripeError::invalid(
                "start_time",
                "start_time and end_time must be aligned to minute boundaries.",
            ));
        }
        if end <= start {
            return Err(StripeError::invalid("end_time", "end_time must be after start_time."));
        }
        let window = match optional_param(params, "value_grouping_window").as_deref() {
            None => end - start,
            Some("hour") => 3600,
            Some("day") => 86_400,
            Some(other) => {
                return Err(StripeError::invalid(
                    "value_grouping_window",
                    format!("Invalid value_grouping_window: {other}"),
                ))
            }
        };
        if window != end - start && (start % window != 0 || end % window != 0) {
            return Err(StripeError::invalid(
                "start_time",
                "start_time and end_time must be aligned to the value_grouping_window.",
            ));
        }
        let mut summaries = Vec::new();
        let mut from = start;
        while from < end {
            let to = (from + window).min(end);
            summaries.push(MeterEventSummary {
                aggregated_value: self.aggregate(meter, &customer, from, to),
                end_time: to,
                id: format!("mtrusg_{}_{}_{}", meter_id.trim_start_matches("mtr_"), from, to),
                livemode: false,
                meter: meter_id.to_string(),
                object: "billing.meter_event_summary".into(),
                start_time: from,
            });
            from = to;
        }
        let url = format!("/v1/billing/meters/{meter_id}/event_summaries");
        Ok(to_json(&List::new(url, summaries, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::{event, meter, NOW};
    use super::*;
    use serde_json::json;

    #[test]
    fn meter_events_are_validated_deduplicated_cancelled_and_summed() {
        let mut s = Store::default();
        let id = meter(&mut s);
        assert!(event(&mut s, "a", "10", NOW - 100).is_ok());
        assert!(event(&mut s, "b", "5", NOW - 50).is_ok());
        let dup = event(&mut s, "a", "10", NOW - 100).unwrap_err();
        assert_eq!((dup.status, dup.code), (400, Some("resource_already_exists")));
        assert_eq!(
            event(&mut s, "c", "1.5", NOW).unwrap_err().param.as_deref(),
            Some("payload[value]")
        );
        assert_eq!(
            event(&mut s, "d", "-1", NOW).unwrap_err().param.as_deref(),
            Some("payload[value]")
        );
        assert_eq!(
            event(&mut s, "e", "1", NOW - MAX_EVENT_AGE_SECS - 1).unwrap_err().param.as_deref(),
            Some("timestamp")
        );
        assert_eq!(
            event(&mut s, "f", "1", NOW + 301).unwrap_err().param.as_deref(),
            Some("timestamp")
        );
        let start = (NOW - 3600) / 60 * 60;
        let end = (NOW + 120) / 60 * 60;
        let sum = |s: &Store| {
            s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": start.to_string(), "end_time": end.to_string()})).unwrap()["data"][0]["aggregated_value"].clone()
        };
        assert_eq!(sum(&s), 15);
        s.create_meter_event_adjustment(
            &json!({"event_name": "tally_traces", "type": "cancel", "cancel": {"identifier": "b"}}),
            NOW,
        )
        .unwrap();
        assert_eq!(sum(&s), 10);
        // After 24 hours an identifier may be used again, and an event can no longer be cancelled.
        assert!(s
            .create_meter_event_adjustment(
                &json!({"event_name": "tally_traces", "cancel": {"identifier": "a"}}),
                NOW + IDENTIFIER_WINDOW_SECS
            )
            .is_err());
        assert!(s.create_meter_event(&json!({"event_name": "tally_traces", "identifier": "a", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}), NOW + IDENTIFIER_WINDOW_SECS).is_ok());
    }

    #[test]
    fn summaries_group_by_window_and_check_alignment() {
        let mut s = Store::default();
        let id = meter(&mut s);
        let hour = NOW / 3600 * 3600;
        event(&mut s, "x", "3", hour - 3600 + 10).unwrap();
        event(&mut s, "y", "4", hour + 10).unwrap();
        let page = s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": (hour - 3600).to_string(), "end_time": (hour + 3600).to_string(), "value_grouping_window": "hour"})).unwrap();
        let values: Vec<i64> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["aggregated_value"].as_i64().unwrap())
            .collect();
        assert_eq!(values, [3, 4]);
        assert!(s.meter_event_summaries(&id, &json!({"customer": "cus_1", "start_time": (hour + 1).to_string(), "end_time": (hour + 3600).to_string()})).is_err());
    }
}
