-- 1. Why an event was ignored (`payment is not ours`, `unhandled Stripe event type`, …): stored
--    with the outcome, so an operator can tell an unknown type from a payment of another system.
--    The outcome itself now also says `recorded` (an event that changes nothing by design) and
--    `unchanged` (a move the transition table refuses) apart from `stale` (older than the state).
ALTER TABLE webhook_events ADD COLUMN outcome_reason TEXT;

-- 2. The stored payment settings of an invoice's three levels, side by side: the one definition
--    of how the levels join, read by the API (`GET /invoices/{id}/payment-settings`) and by the
--    worker's read of an invoice's state alike, so the two can never disagree. The override order
--    itself (invoice > billing schedule > customer > account) is applied in Rust
--    (`reconcile::settings::resolve`).
CREATE VIEW invoice_settings AS
SELECT i.id AS invoice_id,
       i_s.payment_provider AS invoice_provider, i_s.auto_charge AS invoice_auto,
       b_s.payment_provider AS schedule_provider, b_s.auto_charge AS schedule_auto,
       c_s.payment_provider AS customer_provider, c_s.auto_charge AS customer_auto
FROM invoices i
LEFT JOIN payment_settings i_s ON i_s.level = 'INVOICE' AND i_s.target_id = i.id
LEFT JOIN payment_settings b_s ON b_s.level = 'BILLING_SCHEDULE' AND b_s.target_id = i.billing_schedule_id
LEFT JOIN payment_settings c_s ON c_s.level = 'CUSTOMER' AND c_s.target_id = i.customer_id;
