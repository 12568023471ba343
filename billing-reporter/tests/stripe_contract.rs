//! async-stripe (the 1.0 line Tally uses in production) against the Stripe stand-in: every
//! answer Tally relies on parses into async-stripe's types, Stripe's errors come back as
//! `StripeError::Stripe`, and `setup-stripe` is idempotent.

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_adjustment::{CreateBillingMeterEventAdjustment, CreateBillingMeterEventAdjustmentCancel};
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_billing::BillingMeterEventAdjustmentType;
use stripe_core::customer::{CreateCustomer, RetrieveCustomer};
use stripe_product::price::RetrievePrice;
use tally_billing_reporter::setup::setup_stripe;
use tally_pricing::Pricing;

async fn standin() -> Client {
    let base = tally_stripe_standin::spawn_local("sk_test_contract_rust").await.unwrap();
    ClientBuilder::new("sk_test_contract_rust").url(base).build().unwrap()
}

#[tokio::test]
async fn async_stripe_parses_every_answer_and_setup_is_idempotent() {
    let client = standin().await;
    let pricing = Pricing::builtin();

    let first = setup_stripe(&client, &pricing).await.expect("setup-stripe against the stand-in");
    assert_eq!(first.meters.len(), 2);
    assert_eq!(first.products.len(), 4);
    assert_eq!(first.prices.len(), 12);
    let again = setup_stripe(&client, &pricing).await.unwrap();
    assert_eq!(again, first, "a second run finds everything and creates nothing");

    // The graduated tiers went over as written.
    let key = "tally_2026_11_enterprise_traces";
    let price = RetrievePrice::new(first.prices[key].as_str()).expand(vec!["tiers".to_string()]).send(&client).await.unwrap();
    let tiers = price.tiers.expect("expanded tiers");
    let got: Vec<(Option<i64>, Option<String>)> = tiers.iter().map(|t| (t.up_to, t.unit_amount_decimal.clone())).collect();
    assert_eq!(
        got,
        [
            (Some(2_500_000), Some("0".into())),
            (Some(5_000_000), Some("0.12".into())),
            (Some(10_000_000), Some("0.1".into())),
            (None, Some("0.08".into())),
        ]
    );

    let customer = CreateCustomer::new()
        .name("Acme")
        .metadata(HashMap::from([("org_id".to_string(), "acme".to_string())]))
        .send(&client)
        .await
        .unwrap();
    match RetrieveCustomer::new(customer.id.clone()).send(&client).await.unwrap() {
        stripe_core::customer::RetrieveCustomerReturned::Customer(fetched) => assert_eq!(fetched.id, customer.id),
        other => panic!("expected the customer, got {other:?}"),
    }

    let now = chrono::Utc::now().timestamp();
    let hour = now / 3600 * 3600;
    let payload = HashMap::from([("stripe_customer_id".to_string(), customer.id.to_string()), ("value".to_string(), "1500".to_string())]);
    let event = CreateBillingMeterEvent::new("tally_traces", payload.clone())
        .identifier("acme/2026-11/traces/1500")
        .timestamp(hour + 1)
        .customize()
        .request_strategy(RequestStrategy::Idempotent(IdempotencyKey::new("acme/2026-11/traces/1500").unwrap()))
        .send(&client)
        .await
        .unwrap();
    assert_eq!(event.identifier, "acme/2026-11/traces/1500");

    // Stripe's refusal of a repeated identifier arrives as a typed Stripe error.
    let repeated = CreateBillingMeterEvent::new("tally_traces", payload).identifier("acme/2026-11/traces/1500").timestamp(hour + 1).send(&client).await;
    match repeated {
        Err(StripeError::Stripe(error, 400)) => assert_eq!(error.code.as_ref().map(|c| c.as_str()), Some("resource_already_exists")),
        other => panic!("expected a 400 from Stripe, got {other:?}"),
    }

    let summaries = ListIdBillingMeterEventSummary::new(first.meters["traces"].as_str(), customer.id.as_str(), hour + 3600, hour)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(summaries.data.len(), 1);
    assert_eq!(summaries.data[0].aggregated_value, 1500.0);

    CreateBillingMeterEventAdjustment::new("tally_traces", BillingMeterEventAdjustmentType::Cancel)
        .cancel(CreateBillingMeterEventAdjustmentCancel { identifier: Some("acme/2026-11/traces/1500".into()) })
        .send(&client)
        .await
        .unwrap();
    let summaries = ListIdBillingMeterEventSummary::new(first.meters["traces"].as_str(), customer.id.as_str(), hour + 3600, hour)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(summaries.data[0].aggregated_value, 0.0);

    // A missing object is Stripe's 404.
    match RetrieveCustomer::new("cus_missing").send(&client).await {
        Err(StripeError::Stripe(error, 404)) => assert_eq!(error.code.as_ref().map(|c| c.as_str()), Some("resource_missing")),
        other => panic!("expected a 404, got {other:?}"),
    }
}
