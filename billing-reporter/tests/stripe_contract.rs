//! async-stripe (the 1.0 line Tally uses in production) against the Stripe stand-in: every
//! answer Tally relies on parses into async-stripe's types, Stripe's errors come back as
//! `StripeError::Stripe`, and `setup-stripe` is idempotent. Checkout Sessions go through
//! async-stripe's requests; subscriptions, invoices and events (which Tally reads from webhooks)
//! are parsed with miniserde into `stripe_shared`'s types, as async-stripe parses answers.

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_adjustment::{
    CreateBillingMeterEventAdjustment, CreateBillingMeterEventAdjustmentCancel,
};
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
    let price = RetrievePrice::new(first.prices[key].as_str())
        .expand(vec!["tiers".to_string()])
        .send(&client)
        .await
        .unwrap();
    let tiers = price.tiers.expect("expanded tiers");
    let got: Vec<(Option<i64>, Option<String>)> =
        tiers.iter().map(|t| (t.up_to, t.unit_amount_decimal.clone())).collect();
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
        stripe_core::customer::RetrieveCustomerReturned::Customer(fetched) => {
            assert_eq!(fetched.id, customer.id)
        }
        other => panic!("expected the customer, got {other:?}"),
    }

    let now = chrono::Utc::now().timestamp();
    let hour = now / 3600 * 3600;
    let payload = HashMap::from([
        ("stripe_customer_id".to_string(), customer.id.to_string()),
        ("value".to_string(), "1500".to_string()),
    ]);
    let event = CreateBillingMeterEvent::new("tally_traces", payload.clone())
        .identifier("acme/2026-11/traces/1500")
        .timestamp(hour + 1)
        .customize()
        .request_strategy(RequestStrategy::Idempotent(
            IdempotencyKey::new("acme/2026-11/traces/1500").unwrap(),
        ))
        .send(&client)
        .await
        .unwrap();
    assert_eq!(event.identifier, "acme/2026-11/traces/1500");

    // Stripe's refusal of a repeated identifier arrives as a typed Stripe error.
    let repeated = CreateBillingMeterEvent::new("tally_traces", payload)
        .identifier("acme/2026-11/traces/1500")
        .timestamp(hour + 1)
        .send(&client)
        .await;
    match repeated {
        Err(StripeError::Stripe(error, 400)) => {
            assert_eq!(error.code.as_ref().map(|c| c.as_str()), Some("resource_already_exists"))
        }
        other => panic!("expected a 400 from Stripe, got {other:?}"),
    }

    let summaries = ListIdBillingMeterEventSummary::new(
        first.meters["traces"].as_str(),
        customer.id.as_str(),
        hour + 3600,
        hour,
    )
    .send(&client)
    .await
    .unwrap();
    assert_eq!(summaries.data.len(), 1);
    assert_eq!(summaries.data[0].aggregated_value, 1500.0);

    CreateBillingMeterEventAdjustment::new("tally_traces", BillingMeterEventAdjustmentType::Cancel)
        .cancel(CreateBillingMeterEventAdjustmentCancel {
            identifier: Some("acme/2026-11/traces/1500".into()),
        })
        .send(&client)
        .await
        .unwrap();
    let summaries = ListIdBillingMeterEventSummary::new(
        first.meters["traces"].as_str(),
        customer.id.as_str(),
        hour + 3600,
        hour,
    )
    .send(&client)
    .await
    .unwrap();
    assert_eq!(summaries.data[0].aggregated_value, 0.0);

    // A missing object is Stripe's 404.
    match RetrieveCustomer::new("cus_missing").send(&client).await {
        Err(StripeError::Stripe(error, 404)) => {
            assert_eq!(error.code.as_ref().map(|c| c.as_str()), Some("resource_missing"))
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

/// An answer of the stand-in, read raw (as a webhook body would be).
async fn raw(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    form: &[(&str, &str)],
) -> String {
    let body = form.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let request = match method {
        reqwest::Method::GET => http.get(format!("{base}{path}?{body}")),
        m => http
            .request(m, format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    };
    let response = request.bearer_auth("sk_test_contract_rust").send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.text().await.unwrap()
}

fn parse<T: miniserde::Deserialize>(what: &str, text: &str) -> T {
    miniserde::json::from_str(text)
        .unwrap_or_else(|e| panic!("{what} does not parse into async-stripe's type ({e}): {text}"))
}

#[tokio::test]
async fn checkout_subscription_invoice_and_event_answers_parse_into_async_stripes_types() {
    use stripe_checkout::checkout_session::{
        CreateCheckoutSession, CreateCheckoutSessionLineItems,
        CreateCheckoutSessionSubscriptionData, RetrieveCheckoutSession,
    };
    use stripe_shared::{
        CheckoutSession, CheckoutSessionMode, CheckoutSessionStatus, Event, EventType, Invoice,
        InvoiceStatus, Subscription, SubscriptionStatus,
    };
    use tally_pricing::stripe::{plans, PriceKind};

    let base = tally_stripe_standin::spawn_local("sk_test_contract_rust").await.unwrap();
    let client = ClientBuilder::new("sk_test_contract_rust").url(base.clone()).build().unwrap();
    let http = reqwest::Client::new();
    let pricing = Pricing::builtin();
    let ids = setup_stripe(&client, &pricing).await.unwrap();
    let plan = plans(&pricing).into_iter().find(|p| p.tier == tally_schemas::Tier::Growth).unwrap();

    // A session as the api creates one: licensed base fee with a quantity, metered prices without.
    let line_items: Vec<CreateCheckoutSessionLineItems> = plan
        .prices
        .iter()
        .map(|price| {
            let mut item = CreateCheckoutSessionLineItems::new();
            item.price = Some(ids.prices[&price.lookup_key].clone());
            if matches!(price.kind, PriceKind::Licensed { .. }) {
                item.quantity = Some(1);
            }
            item
        })
        .collect();
    let metadata = HashMap::from([
        ("tally_org_id".to_string(), "acme".to_string()),
        ("tally_tier".to_string(), "growth".to_string()),
    ]);
    let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
    subscription_data.metadata = Some(metadata.clone());
    let anchor = chrono::Utc::now().timestamp() + 7 * 86_400;
    subscription_data.billing_cycle_anchor = Some(anchor);
    let session: CheckoutSession = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .client_reference_id("acme")
        .success_url("https://tally.test/ok")
        .cancel_url("https://tally.test/cancel")
        .line_items(line_items)
        .metadata(metadata.clone())
        .subscription_data(subscription_data)
        .send(&client)
        .await
        .expect("async-stripe creates a Checkout Session");
    assert_eq!(session.status, Some(CheckoutSessionStatus::Open));
    assert_eq!(
        session.url.as_deref(),
        Some(format!("{base}/_standin/checkout/{}", session.id).as_str())
    );
    assert_eq!(session.client_reference_id.as_deref(), Some("acme"));
    assert!(session.customer.is_none());

    let done: serde_json::Value = http
        .post(format!("{base}/_standin/checkout/sessions/{}/complete", session.id))
        .json(&serde_json::json!({"email": "ops@acme.test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed = RetrieveCheckoutSession::new(session.id.clone())
        .send(&client)
        .await
        .expect("async-stripe retrieves the session");
    assert_eq!(completed.status, Some(CheckoutSessionStatus::Complete));
    let sub_id = done["subscription"]["id"].as_str().unwrap().to_string();
    assert_eq!(completed.subscription.as_ref().map(|s| s.id().to_string()), Some(sub_id.clone()));
    assert_eq!(
        completed.customer.as_ref().map(|c| c.id().to_string()).as_deref(),
        done["customer"]["id"].as_str()
    );

    let sub: Subscription = parse(
        "subscription",
        &raw(&http, &base, reqwest::Method::GET, &format!("/v1/subscriptions/{sub_id}"), &[]).await,
    );
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.metadata, metadata);
    assert_eq!(sub.items.data.len(), 3);
    assert_eq!(sub.items.data[0].quantity, Some(1));
    assert_eq!(sub.items.data[1].quantity, None);
    assert_eq!(sub.items.data[0].current_period_end, anchor);
    let customer = sub.customer.id().to_string();
    let listed: stripe_types::List<Subscription> = parse(
        "subscription list",
        &raw(&http, &base, reqwest::Method::GET, "/v1/subscriptions", &[("customer", &customer)])
            .await,
    );
    assert_eq!(listed.data.len(), 1);

    // Usage, the period's invoice and its payment.
    let now = chrono::Utc::now().timestamp();
    for (meter, value) in [("tally_traces", "300000"), ("tally_payload_bytes", "26000000000")] {
        CreateBillingMeterEvent::new(
            meter,
            HashMap::from([
                ("stripe_customer_id".to_string(), customer.clone()),
                ("value".to_string(), value.to_string()),
            ]),
        )
        .timestamp(now - 60)
        .send(&client)
        .await
        .unwrap();
    }
    let invoice: serde_json::Value = http
        .post(format!("{base}/_standin/invoices"))
        .json(&serde_json::json!({"subscription": sub_id, "period_start": now - 3600, "period_end": now + 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice_id = invoice["id"].as_str().unwrap().to_string();
    http.post(format!("{base}/_standin/invoices/{invoice_id}/pay")).send().await.unwrap();
    let paid: Invoice = parse(
        "invoice",
        &raw(&http, &base, reqwest::Method::GET, &format!("/v1/invoices/{invoice_id}"), &[]).await,
    );
    assert_eq!(paid.status, Some(InvoiceStatus::Paid));
    let (_, tally_total) = pricing.price(
        tally_schemas::Tier::Growth,
        tally_schemas::BilledUsageV1 { traces: 300_000, payload_bytes: 26_000_000_000 },
    );
    assert_eq!((paid.total, paid.amount_paid), (tally_total, tally_total));
    let details = paid
        .parent
        .as_ref()
        .and_then(|p| p.subscription_details.as_ref())
        .expect("a subscription's invoice");
    assert_eq!(details.subscription.id().as_str(), sub_id);
    assert_eq!(details.metadata.as_ref(), Some(&metadata));
    let line = &paid.lines.data[1];
    let price =
        line.pricing.as_ref().and_then(|p| p.price_details.as_ref()).expect("price details");
    assert_eq!(price.price.id().as_str(), ids.prices[&plan.prices[1].lookup_key]);
    let item_parent = line
        .parent
        .as_ref()
        .and_then(|p| p.subscription_item_details.as_ref())
        .expect("a subscription item's line");
    assert_eq!(item_parent.subscription_item, sub.items.data[1].id.as_str());
    let listed: stripe_types::List<Invoice> = parse(
        "invoice list",
        &raw(&http, &base, reqwest::Method::GET, "/v1/invoices", &[("subscription", &sub_id)])
            .await,
    );
    assert_eq!(listed.data.len(), 1);

    // A plan change and a cancellation.
    let item = sub.items.data[0].id.to_string();
    let growth_base = ids.prices[&plan.prices[0].lookup_key].clone();
    let updated: Subscription = parse(
        "updated subscription",
        &raw(
            &http,
            &base,
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{sub_id}"),
            &[
                ("items[0][id]", &item),
                ("items[0][price]", &growth_base),
                ("proration_behavior", "none"),
            ],
        )
        .await,
    );
    assert_eq!(updated.items.data.len(), 3);
    let canceled: Subscription = parse(
        "canceled subscription",
        &raw(&http, &base, reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub_id}"), &[])
            .await,
    );
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    assert!(canceled.canceled_at.is_some() && canceled.ended_at.is_some());

    // Every event, as a webhook would carry it, and their list.
    let events: stripe_types::List<Event> = parse(
        "event list",
        &raw(&http, &base, reqwest::Method::GET, "/v1/events", &[("limit", "100")]).await,
    );
    let kinds: Vec<EventType> = events.data.iter().rev().map(|e| e.type_.clone()).collect();
    use EventType::*;
    assert_eq!(
        kinds,
        [
            CustomerCreated,
            CustomerSubscriptionCreated,
            CheckoutSessionCompleted,
            InvoiceCreated,
            InvoiceFinalized,
            InvoicePaid,
            InvoicePaymentSucceeded,
            CustomerSubscriptionUpdated,
            CustomerSubscriptionDeleted,
        ]
    );
    let raw_events: serde_json::Value = serde_json::from_str(
        &raw(&http, &base, reqwest::Method::GET, "/v1/events", &[("limit", "100")]).await,
    )
    .unwrap();
    for e in raw_events["data"].as_array().unwrap() {
        let id = e["id"].as_str().unwrap();
        let one: Event = parse(
            "event",
            &raw(&http, &base, reqwest::Method::GET, &format!("/v1/events/{id}"), &[]).await,
        );
        assert_eq!(one.api_version.as_deref(), Some("2026-08-26.dahlia"));
        let object = serde_json::to_string(&e["data"]["object"]).unwrap();
        match e["type"].as_str().unwrap() {
            "checkout.session.completed" => {
                parse::<CheckoutSession>(id, &object);
            }
            t if t.starts_with("customer.subscription.") => {
                parse::<Subscription>(id, &object);
            }
            t if t.starts_with("invoice.") => {
                parse::<Invoice>(id, &object);
            }
            t if t.starts_with("customer.") => {
                parse::<stripe_shared::Customer>(id, &object);
            }
            other => panic!("unexpected event {other}"),
        }
        if e["type"] == "customer.subscription.updated" {
            let previous =
                serde_json::to_string(&e["data"]["previous_attributes"]["items"]).unwrap();
            let items: stripe_types::List<stripe_shared::SubscriptionItem> =
                parse("previous items", &previous);
            assert_eq!(items.data[0].price.id.as_str(), sub.items.data[0].price.id.as_str());
        }
    }
}
