-- Issue 28 (tenants): a payout belongs to its account, in its key too. Keyed by
-- (provider, payout id) alone, an event routed to one account could update, fail and announce
-- another account's payout by naming its id. The worker also refuses an event for a payout id
-- another account holds (dead-lettered `foreign_payout`); the key makes every statement that
-- finds a payout or its lines compare the account.
--
-- Existing rows keep working: each line takes its payout's account.
ALTER TABLE payout_lines ADD COLUMN account_id TEXT;
UPDATE payout_lines l SET account_id = p.account_id
FROM payouts p
WHERE p.provider = l.provider AND p.provider_payout_id = l.provider_payout_id;
ALTER TABLE payout_lines ALTER COLUMN account_id SET NOT NULL;

ALTER TABLE payout_lines DROP CONSTRAINT payout_lines_provider_provider_payout_id_fkey;
ALTER TABLE payout_lines DROP CONSTRAINT payout_lines_pkey;
ALTER TABLE payouts DROP CONSTRAINT payouts_pkey;
ALTER TABLE payouts ADD PRIMARY KEY (account_id, provider, provider_payout_id);
ALTER TABLE payout_lines ADD PRIMARY KEY (account_id, provider, provider_payout_id, position);
ALTER TABLE payout_lines ADD FOREIGN KEY (account_id, provider, provider_payout_id)
    REFERENCES payouts (account_id, provider, provider_payout_id) ON DELETE CASCADE;

-- Whether another account holds a payout id (the worker's `foreign_payout` check): the key
-- above leads with the account.
CREATE INDEX payouts_by_provider_id ON payouts (provider, provider_payout_id);
-- An invoice's payouts, within its account (`GET /invoices/{id}`).
DROP INDEX payout_lines_by_invoice;
CREATE INDEX payout_lines_by_invoice ON payout_lines (account_id, invoice_id)
    WHERE invoice_id IS NOT NULL;
