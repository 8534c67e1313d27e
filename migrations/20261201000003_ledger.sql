-- The ledger: every movement of money of an invoice, one row each, append-only. An invoice's
-- figures (amount paid, refunded, in dispute, net) and its status are derived from these rows by
-- `reconcile::invoice::figures`; the invoice row keeps the result so listings need no aggregate.
--
-- A movement is keyed by the provider's own money object: the payment (Stripe PaymentIntent, a
-- legacy charge, GoCardless PM…) for a collection, its reversal and a GoCardless chargeback; the
-- refund (re_…, RF…) for a refund and its reversal; the dispute (dp_…) for funds a dispute
-- withdrew or reinstated. Whichever event carried it, the same movement of the same object has the
-- same key, so it can never be counted twice. `seq` numbers the rare repeats of one kind on one
-- object (a GoCardless payment collected, reversed by a late failure, collected again).
CREATE TABLE money_movements (
    id                 BIGSERIAL PRIMARY KEY,
    account_id         TEXT NOT NULL,
    invoice_id         TEXT NOT NULL REFERENCES invoices (id),
    payment_id         TEXT NOT NULL REFERENCES payments (id),
    provider           TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_object_id TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('COLLECTED', 'COLLECTION_REVERSED', 'REFUNDED',
                           'REFUND_REVERSED', 'DISPUTE_WITHDRAWN', 'DISPUTE_REINSTATED')),
    seq                INTEGER NOT NULL DEFAULT 1 CHECK (seq >= 1),
    amount             minor_units NOT NULL,
    currency           currency_code NOT NULL,
    -- Where the amount came from (`event`, `registered_payment`, `invoice_outstanding`, …).
    amount_source      TEXT NOT NULL,
    -- Provider time of the event that recorded the movement, and that event.
    occurred_at        TIMESTAMPTZ NOT NULL,
    event_id           TEXT NOT NULL,
    recorded_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_object_id, kind, seq)
);
CREATE INDEX money_movements_invoice ON money_movements (invoice_id, id);
CREATE INDEX money_movements_payment ON money_movements (payment_id, id);

-- Refunds of a payment: registered by the billing system (GoCardless refund events carry no
-- amount and no payment) or first seen in a provider event. The money they move is in the ledger.
CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL,
    payment_id         TEXT NOT NULL REFERENCES payments (id),
    provider           TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_refund_id TEXT NOT NULL,
    -- NULL: registered without an amount; the payment's refundable remainder when it moves.
    amount             minor_units,
    amount_source      TEXT,
    status             TEXT NOT NULL DEFAULT 'REGISTERED'
        CHECK (status IN ('REGISTERED', 'PENDING', 'SUCCEEDED', 'FAILED', 'CANCELED')),
    failure_reason     TEXT,
    last_event_at      TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_refund_id)
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- Disputes (Stripe) of a payment: an inquiry moves no money; a dispute withdraws its amount until
-- it is won. GoCardless chargebacks are payment events and need no row here.
CREATE TABLE disputes (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL,
    payment_id          TEXT NOT NULL REFERENCES payments (id),
    provider            TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_dispute_id TEXT NOT NULL,
    amount              minor_units NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('INQUIRY', 'INQUIRY_CLOSED', 'OPEN', 'WON', 'LOST')),
    -- The provider's own status and reason, as sent (`needs_response`, `fraudulent`).
    provider_status     TEXT,
    reason              TEXT,
    evidence_due_by     TIMESTAMPTZ,
    last_event_at       TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_dispute_id)
);
CREATE INDEX disputes_payment ON disputes (payment_id);

-- The derived figures the invoice row keeps beside amount_paid, and the new status.
ALTER TABLE invoices
    ADD COLUMN amount_refunded   minor_units NOT NULL DEFAULT 0,
    ADD COLUMN amount_in_dispute minor_units NOT NULL DEFAULT 0,
    ADD COLUMN refund_state      TEXT NOT NULL DEFAULT 'NONE'
        CHECK (refund_state IN ('NONE', 'PARTIAL', 'FULL')),
    DROP CONSTRAINT invoices_status_check,
    ADD CONSTRAINT invoices_status_check
        CHECK (status IN ('OPEN', 'PARTIALLY_PAID', 'PAID', 'PAYMENT_FAILED', 'DISPUTED'));

-- Today's payments into the ledger, so existing invoices keep their figures: a collected payment
-- was collected; a reversed one (a GoCardless chargeback) was collected, then withdrawn. A
-- payment that failed after it was collected nets to nothing either way and gets no rows.
INSERT INTO money_movements (account_id, invoice_id, payment_id, provider, provider_object_id,
    kind, amount, currency, amount_source, occurred_at, event_id)
SELECT p.account_id, p.invoice_id, p.id, p.provider, p.provider_payment_id, k.kind, p.amount,
       p.currency, 'migrated', COALESCE(p.last_event_at, p.updated_at), 'migration:20261201000003'
FROM payments p
CROSS JOIN LATERAL (VALUES ('COLLECTED'), ('DISPUTE_WITHDRAWN')) AS k (kind)
WHERE p.status = 'SUCCEEDED' AND k.kind = 'COLLECTED'
   OR p.status = 'REVERSED';
