-- Every applied payment event updates its invoice (amount_paid, status, updated_at). Measured with
-- the worker's own statements under pgbench: the update was the costliest part of the worker's
-- transaction, because it could never be HOT. `status` was indexed, so each update wrote a new entry
-- into every index of the table, and with a full page (fillfactor 100) the new row version went to
-- the table's last page, which every concurrent worker transaction then fought over.
--
-- Customer listings are ordered by id and filter the status on the rows they read, so the index
-- need not hold the status; and space kept free on each page lets the new version stay beside the
-- old one. Together the update is HOT: no index is touched. (Existing pages gain the free space
-- when the table is next rewritten; new invoices have it at once.)
DROP INDEX invoices_customer_status;
CREATE INDEX invoices_customer ON invoices (customer_id, id);
ALTER TABLE invoices SET (fillfactor = 80);
