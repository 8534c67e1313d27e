-- Stripe's separate authorisation and capture (issue 29): a payment can be AUTHORISED, its amount
-- held on the customer's card and not collected, until a capture collects what was captured or
-- the hold is released (cancelled, or lapsed at `hold_expires_at`).
ALTER TABLE payments DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check CHECK (status IN ('REGISTERED', 'PENDING', 'AUTHORISED',
        'SUCCEEDED', 'FAILED', 'CANCELED', 'REVERSED'));
ALTER TABLE payments ADD COLUMN hold_expires_at TIMESTAMPTZ;
COMMENT ON COLUMN payments.hold_expires_at IS
    'when an authorised payment''s hold lapses unless captured (Stripe capture_before)';
