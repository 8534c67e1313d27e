-- A provider's own invoice, linked to settle's invoice. Stripe Billing's invoices (current API
-- versions) name no PaymentIntent, and the PaymentIntents they create carry no
-- `metadata.invoice_id`: the Stripe invoice's metadata names settle's invoice, and
-- `invoice_payment.paid` names the Stripe invoice and the PaymentIntent that paid it. The first
-- link wins; a later event naming another invoice for the same Stripe invoice is logged.
CREATE TABLE provider_invoice_links (
    provider            TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_invoice_id TEXT NOT NULL,
    invoice_id          TEXT NOT NULL REFERENCES invoices (id),
    event_id            TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_invoice_id)
);
