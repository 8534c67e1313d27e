-- Unmatched events (issue 11, §4): a payment event that names no invoice, for a payment nobody
-- has registered yet, is kept as `unmatched` until `POST /invoices/{id}/payments` registers that
-- payment; the registering transaction then applies it.
--
-- Two columns of the inbox row, not a table of their own: the inbox row already is the event (its
-- payload, type and received time), `unmatched` is one of its outcomes, and claiming it is then a
-- change of that one row (the worker's inbox insert, `ON CONFLICT … DO UPDATE … WHERE outcome =
-- 'unmatched'`): no second row to keep consistent with it, nothing to delete when it is applied.
--
-- `unmatched_provider_payment_id`: the provider payment id (Stripe `pi_…`, GoCardless `PM…`) the
-- event waits for; set exactly while the outcome is `unmatched` (the CHECK), cleared when claimed.
-- `unmatched_occurred_at`: the event's provider time, so the registration applies the waiting
-- events oldest first and operators see when they happened, without re-reading the payloads.
ALTER TABLE webhook_events
    ADD COLUMN unmatched_provider_payment_id TEXT,
    ADD COLUMN unmatched_occurred_at TIMESTAMPTZ;

-- NOT VALID: every row written from now on is checked; the rows already there cannot be unmatched
-- (the outcome did not exist before this migration), so a scan of the whole inbox to check them
-- would prove nothing.
ALTER TABLE webhook_events
    ADD CONSTRAINT webhook_events_unmatched_waits_for_a_payment
    CHECK ((outcome = 'unmatched') = (unmatched_provider_payment_id IS NOT NULL)) NOT VALID;

-- The registration's lookup (and the operators' listing): a few rows at any time. The predicate
-- names the new column, not `outcome` (the same rows, by the CHECK): the worker rewrites `outcome`
-- of every stale, unchanged or ignored event, and an index whose predicate reads `outcome` would
-- make each of those updates non-HOT, a new entry in every index of the inbox. (Building it reads
-- the inbox once, with its writes waiting; webhook intake needs only the broker and goes on.)
CREATE INDEX webhook_events_unmatched ON webhook_events (provider, unmatched_provider_payment_id)
    WHERE unmatched_provider_payment_id IS NOT NULL;

COMMENT ON COLUMN webhook_events.outcome IS
    'applied, stale, unchanged, recorded, ignored (why in outcome_reason) or unmatched (waits for unmatched_provider_payment_id to be registered); a duplicate delivery stores nothing';
