-- The relay's retries (issue 28, §5). A reconciliation event that a subscriber's queue refuses
-- (full with `x-overflow=reject-publish`), or that the broker cannot confirm in time (a quorum
-- queue without its quorum), used to be published again on every pass, to every subscriber, and
-- 1,000 of them at the head stopped the relay for everyone. Now each such row waits
-- `not_before` (a backoff that doubles with `attempts`) while the rows behind it go out, and
-- after the last attempt it is parked with its reason: it leaves the relay's work list for an
-- operator (`settle outbox retry`), and is counted.
ALTER TABLE outbox_pending
    ADD COLUMN attempts INT NOT NULL DEFAULT 0,
    ADD COLUMN not_before TIMESTAMPTZ,
    ADD COLUMN parked_reason TEXT;
COMMENT ON COLUMN outbox_pending.attempts IS
    'publishes the broker refused or did not confirm; the row is parked after the last';
COMMENT ON COLUMN outbox_pending.parked_reason IS
    'why the relay gave up on this row (not published until an operator retries it)';
