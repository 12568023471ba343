-- One Checkout at a time per org (docs/stripe.md, "Checkout"): a session is open, complete or
-- expired, and at most one per org is open. A new Checkout expires the org's open session in
-- Stripe first, so two Checkouts started at once cannot both complete into two subscriptions.
ALTER TABLE checkout_sessions ADD COLUMN state text NOT NULL DEFAULT 'open'
    CHECK (state IN ('open', 'complete', 'expired'));
UPDATE checkout_sessions SET state = 'complete' WHERE completed_at IS NOT NULL;
-- Sessions recorded before this migration, all but the newest open one of each org: counted as
-- expired here (they were made before Checkouts were serialised).
UPDATE checkout_sessions c SET state = 'expired'
 WHERE state = 'open'
   AND EXISTS (SELECT 1 FROM checkout_sessions n
                WHERE n.org_id = c.org_id AND n.state = 'open'
                  AND (n.created_at, n.session_id) > (c.created_at, c.session_id));
CREATE UNIQUE INDEX checkout_sessions_one_open ON checkout_sessions (org_id) WHERE state = 'open';
