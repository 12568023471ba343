//! Request bodies and query strings of the Stripe stand-in: `application/x-www-form-urlencoded`
//! with Stripe's deep-object keys (`tools/stripe-standin/src/form.rs`, compiled in: it is pure).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tools/stripe-standin/src/form.rs"]
mod form;

fuzz_target!(|data: &[u8]| form::fuzz_parse(data));
