-- How far each source's event list has been swept (issue 14): the sweeper lists from here, less
-- an overlap, so a missed webhook is found within one interval and nothing between two sweeps is
-- skipped. A source is the default account's list at a provider (`default`) or a connection's.
CREATE TABLE backfill_cursors (
    provider        TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    source          TEXT NOT NULL,
    -- Every event created before this was listed by a successful sweep.
    swept_until     TIMESTAMPTZ NOT NULL,
    last_success_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, source)
);
