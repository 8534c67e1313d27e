-- The attempt the payment's last failure belongs to (Stripe: the failing charge). One declined
-- attempt reaches settle as several events (payment_intent.payment_failed, charge.failed, …): a
-- failure of an attempt already recorded changes nothing and is announced and mailed once.
ALTER TABLE payments ADD COLUMN failure_attempt_id TEXT;
-- The notifications' key column `failure_event_id` holds that attempt id when there is one (the
-- event id otherwise), so the mails of one attempt are written once whichever event came first.
COMMENT ON COLUMN notifications.failure_event_id IS
    'the failed attempt (Stripe charge id) when the provider names one, else the failure event id';
