//! What a Stripe webhook delivery is before Tally trusts it: its `Stripe-Signature`, checked on
//! the raw body, and then its envelope (id, type, created). Pure functions of their input, so
//! that the fuzz target `webhook` (`fuzz/fuzz_targets/webhook.rs`) runs them as the api does.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::stripe_objects::Event;

/// How old (or how far ahead) a signature's timestamp may be, as Stripe's own libraries allow.
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature needs t=<timestamp> and at least one v1=<hex>")]
    Malformed,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature's timestamp is more than 300 s from now")]
    Stale,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_signature",
            SignatureError::Malformed | SignatureError::Mismatch => "invalid_signature",
            SignatureError::Stale => "stale_signature",
        }
    }
}

/// Checks `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` (other schemes are ignored, as
/// Stripe's libraries do): some `v1` must be HMAC-SHA256 of `"<t>.<raw body>"` under `secret`,
/// compared in constant time, and `t` must be within [`SIGNATURE_TOLERANCE_SECS`] of `now`.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .iter()
        .filter_map(|s| hex::decode(s).ok())
        .any(|s| mac.clone().verify_slice(&s).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // abs_diff: a timestamp at the ends of i64 is merely stale, never an overflow.
    if now.abs_diff(at) > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// A verified body read as an event: the JSON as sent (stored as it is), its envelope, and
/// Stripe's `created` as an instant. `Err` with the message the api answers 400 with.
pub fn read_event(body: &[u8]) -> Result<(Value, Event, DateTime<Utc>), String> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let event = Event::deserialize(&payload)
        .map_err(|_| "an event needs id, type and created".to_string())?;
    let created = Utc
        .timestamp_opt(event.created, 0)
        .single()
        .ok_or_else(|| "created is out of range".to_string())?;
    Ok((payload, event, created))
}

/// What the fuzz target `webhook` runs on each input, and the test below on each input of its
/// corpus. The first byte picks how the delivery is signed: even, correctly (with a timestamp
/// from the next 8 bytes), so that the envelope and the objects behind it are reached; odd, with
/// a header taken from the input up to its first newline. Nothing may panic, and a correctly
/// signed body is never refused for its signature, only for its age.
#[doc(hidden)]
pub fn fuzz_delivery(data: &[u8]) {
    const SECRET: &[u8] = b"whsec_fuzz";
    const NOW: i64 = 1_760_000_000;
    let Some((&mode, rest)) = data.split_first() else { return };
    let (header, body) = if mode % 2 == 0 {
        let Some((t, body)) = rest.split_first_chunk::<8>() else { return };
        let t = i64::from_le_bytes(*t);
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let header = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        let verdict = verify_signature(SECRET, Some(&header), body, NOW);
        assert!(
            matches!(verdict, Ok(()) | Err(SignatureError::Stale)),
            "a correct signature was refused: {verdict:?}"
        );
        (header, body)
    } else {
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let header = String::from_utf8_lossy(&rest[..split]).into_owned();
        (header, rest.get(split + 1..).unwrap_or_default())
    };
    if verify_signature(SECRET, Some(&header), body, NOW).is_err() && mode % 2 == 1 {
        return;
    }
    let Ok((_, event, _)) = read_event(body) else { return };
    use crate::stripe_objects::{CheckoutSession, Invoice, Subscription};
    if let Ok(session) = event.object::<CheckoutSession>() {
        let _ = (session.id(), session.org_id(), session.customer_id());
        let _ = (session.subscription_id(), session.tier());
    }
    if let Ok(subscription) = event.object::<Subscription>() {
        let _ = (subscription.id(), subscription.customer_id(), subscription.status());
        let _ = (subscription.org_id(), subscription.tier());
        for price in subscription.prices() {
            let _ = (price.lookup_key(), price.product_id());
        }
    }
    if let Ok(invoice) = event.object::<Invoice>() {
        let _ = (invoice.id(), invoice.billing_reason(), invoice.customer_id(), invoice.org_id());
        let _ = (invoice.status(), invoice.currency());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input the fuzzer kept is a regression test.
    #[test]
    fn the_fuzz_corpus_reads_without_panicking() {
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/webhook");
        let mut inputs = 0;
        for entry in std::fs::read_dir(corpus).expect("the corpus is in the repository") {
            fuzz_delivery(&std::fs::read(entry.unwrap().path()).unwrap());
            inputs += 1;
        }
        assert!(inputs >= 10, "fuzz/corpus/webhook holds only {inputs} inputs");
    }

    #[test]
    fn a_timestamp_at_the_ends_of_time_is_stale() {
        for t in [i64::MIN, i64::MAX] {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(b"{}");
            let header = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(verify_signature(b"k", Some(&header), b"{}", 0), Err(SignatureError::Stale));
        }
    }
}
