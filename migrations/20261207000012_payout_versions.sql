-- Payouts learn late (issue 29, §4): a PARTIALLY_MATCHED payout is matched again from its stored
-- lines, without asking the provider, when the ledger learns one of its unmatched lines' objects
-- (a payment registered after the payout was listed). A line keeps what the matcher needs for that:
-- the ledger key its source is looked up by (a charge made by a PaymentIntent is the
-- PaymentIntent's, which `source_id` as listed does not say) and how it counts. Lines stored before
-- have none: their payouts are listed again instead (`settle payouts fetch`).
ALTER TABLE payout_lines
    ADD COLUMN source_kind TEXT
        CHECK (source_kind IN ('PAYMENT', 'REFUND', 'DISPUTE', 'PAYOUT', 'NONE')),
    ADD COLUMN source_key TEXT,
    ADD COLUMN role TEXT CHECK (role IN ('MONEY', 'FEE', 'PAYOUT', 'ADJUSTMENT', 'UNKNOWN'));
-- Each changed outcome of a payout is announced as a new version: its announcements' ids carry it.
ALTER TABLE payouts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
COMMENT ON COLUMN payouts.version IS
    'the outcome''s version: one more each time a listing or a match changes it';
