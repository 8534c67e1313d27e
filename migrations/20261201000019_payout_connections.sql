-- Payouts (issue 17): the connection whose credentials list a payout's lines. An account may
-- hold the platform's own keys and connections of the same provider (a Stripe Connect account
-- read with `Stripe-Account`): the account alone does not say which list a payout is on.
-- NULL: the platform's own keys (`[stripe]`, `[gocardless]`).
ALTER TABLE payouts ADD COLUMN connection_id TEXT;
