-- Customers as wallee's customer API has them (issue 34): a version for optimistic locking (one
-- more at every update), the given and family name, the preferred currency, the language (BCP
-- 47) and metadata (a bounded string map).
ALTER TABLE customers
    ADD COLUMN version            INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN given_name         TEXT,
    ADD COLUMN family_name        TEXT,
    ADD COLUMN preferred_currency currency_code,
    ADD COLUMN language           TEXT,
    ADD COLUMN metadata           JSONB NOT NULL DEFAULT '{}';

-- `GET /customers`: pages in id order within the account (the primary key), filtered by email
-- (case-insensitive), a name's start and the time of creation.
CREATE INDEX customers_by_email ON customers (account_id, lower(email));
CREATE INDEX customers_by_name ON customers (account_id, lower(legal_name) text_pattern_ops);

-- A deleted customer (`DELETE /customers/{id}`) stays as a row its settled invoices still name,
-- hidden from the API; its provider customer ids are released.
ALTER TABLE customers ADD COLUMN deleted_at TIMESTAMPTZ;
