//! Deliveries to the api's `POST /v1/stripe/webhooks`: the `Stripe-Signature` check on the raw
//! body, then the event's envelope and the objects Tally reads from it. The api's own files are
//! compiled in (they are pure: serde, HMAC), so that the fuzzer needs none of the api's I/O.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../api/src/stripe_objects.rs"]
mod stripe_objects;
#[allow(dead_code)]
#[path = "../../api/src/webhook_input.rs"]
mod webhook_input;

fuzz_target!(|data: &[u8]| webhook_input::fuzz_delivery(data));
