"""Stripe's official Python library against the stand-in: if Stripe's own client can create a
meter, send meter events and read their summaries, and sees Stripe's errors where Stripe would
give them, the stand-in keeps Stripe's contract for what Tally uses.

Run by stripe-standin/tests/python_contract.rs with STANDIN_URL set; exits non-zero on failure.
"""

import os
import sys
import time
import uuid

import stripe

BASE = os.environ["STANDIN_URL"]
KEY = "sk_test_contract_" + uuid.uuid4().hex[:12]
client = stripe.StripeClient(KEY, base_addresses={"api": BASE})
run = uuid.uuid4().hex[:8]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def expect_error(error_type, call, what):
    try:
        call()
    except error_type as e:
        check(True, what)
        return e
    except stripe.StripeError as e:
        check(False, f"{what}: got {type(e).__name__} {e}")
    check(False, f"{what}: no error")


meter = client.v1.billing.meters.create(
    {
        "display_name": "Traces",
        "event_name": f"tally_traces_{run}",
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }
)
check(meter.object == "billing.meter" and meter.id.startswith("mtr_"), "a meter is created")
check(meter.default_aggregation.formula == "sum", "the meter sums")
listed = client.v1.billing.meters.list({"status": "active", "limit": 100})
check(any(m.id == meter.id for m in listed.data), "the meter is listed")

customer = client.v1.customers.create({"name": "Contract test", "metadata": {"org_id": f"org-{run}"}})
check(customer.id.startswith("cus_") and customer.metadata["org_id"] == f"org-{run}", "a customer is created")

now = int(time.time())
hour = now // 3600 * 3600


def event(identifier, value, ts, key=None):
    options = {"idempotency_key": key} if key else {}
    return client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": customer.id, "value": str(value)},
            "identifier": identifier,
            "timestamp": ts,
        },
        options,
    )


first = event(f"{run}-1", 1200, hour + 5, key=f"{run}-k1")
check(first.object == "billing.meter_event" and first.identifier == f"{run}-1", "a meter event is accepted")
check(first.payload["value"] == "1200", "the payload is echoed")
event(f"{run}-2", 34, hour + 6)

# The same Idempotency-Key with the same parameters replays the first answer and counts nothing.
again = event(f"{run}-1", 1200, hour + 5, key=f"{run}-k1")
check(again.identifier == first.identifier and again.created == first.created, "an idempotent retry replays")
# The same key with other parameters is refused.
expect_error(stripe.IdempotencyError, lambda: event(f"{run}-9", 1, hour + 5, key=f"{run}-k1"), "a reused key with other parameters is refused")
# A repeated identifier is refused.
e = expect_error(stripe.InvalidRequestError, lambda: event(f"{run}-1", 1200, hour + 5), "a repeated identifier is refused")
check(e.code == "resource_already_exists", "with Stripe's code")
# Values must be whole numbers; timestamps within 35 days back and 5 minutes ahead.
e = expect_error(stripe.InvalidRequestError, lambda: event(f"{run}-3", "1.5", hour + 7), "a fractional value is refused")
check(e.param == "payload[value]", "naming the parameter")
expect_error(stripe.InvalidRequestError, lambda: event(f"{run}-4", 1, now - 36 * 86400), "an event older than 35 days is refused")
expect_error(stripe.InvalidRequestError, lambda: event(f"{run}-5", 1, now + 600), "an event 10 minutes ahead is refused")
# Unknown parameters are refused as Stripe refuses them.
e = expect_error(
    stripe.InvalidRequestError,
    lambda: client.v1.billing.meter_events.create({"event_name": meter.event_name, "payload": {"stripe_customer_id": customer.id, "value": "1"}, "colour": "blue"}),
    "an unknown parameter is refused",
)
check(e.param == "colour", "naming it")

summaries = client.v1.billing.meters.event_summaries.list(
    meter.id, {"customer": customer.id, "start_time": hour, "end_time": hour + 3600}
)
check(len(summaries.data) == 1 and summaries.data[0].aggregated_value == 1234, f"the summary sums once: {summaries.data}")

# A cancelled event leaves the summary.
client.v1.billing.meter_event_adjustments.create({"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": f"{run}-2"}})
summaries = client.v1.billing.meters.event_summaries.list(
    meter.id, {"customer": customer.id, "start_time": hour - 3600, "end_time": hour + 3600, "value_grouping_window": "hour"}
)
check([s.aggregated_value for s in summaries.data] == [0, 1200], f"hourly summaries after a cancel: {summaries.data}")

# Wrong keys are refused without echoing the key.
bad = stripe.StripeClient("sk_test_wrong_but_well_formed", base_addresses={"api": BASE})
other = stripe.StripeClient("sk_live_nope", base_addresses={"api": BASE})
e = expect_error(stripe.AuthenticationError, lambda: other.v1.customers.list(), "a live key is refused")
check("sk_live_nope" not in str(e), "the key is not echoed")

print(f"contract: {checks} checks passed")
