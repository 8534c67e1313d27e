-- A customer merged into another (`POST /customers/{id}/merge`) stays as a hidden row naming the
-- customer it now belongs to. It keeps the provider customer ids the survivor could not take (the
-- survivor has its own), so a provider event naming them still finds the survivor. Always one hop:
-- a merge re-points the rows merged into the customer it merges away.
ALTER TABLE customers ADD COLUMN merged_into TEXT,
    ADD CONSTRAINT customers_merged_into_fkey FOREIGN KEY (account_id, merged_into)
        REFERENCES customers (account_id, id),
    ADD CONSTRAINT customers_merged_is_deleted CHECK (merged_into IS NULL OR deleted_at IS NOT NULL);

-- Payment methods in Chargebee's shapes: the gateway that holds the method (Chargebee's names:
-- `stripe`, `gocardless`, `braintree`, `paypal_express_checkout`, …). `provider` is set only for
-- a gateway settle reconciles; a method on another gateway is stored, and never charged by settle.
ALTER TABLE payment_methods ADD COLUMN gateway TEXT,
    ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}';
UPDATE payment_methods SET gateway = lower(provider);
ALTER TABLE payment_methods ALTER COLUMN gateway SET NOT NULL,
    ALTER COLUMN provider DROP NOT NULL,
    ADD CONSTRAINT payment_methods_gateway_is_provider
        CHECK (provider IS NULL OR gateway = lower(provider)),
    DROP CONSTRAINT payment_methods_account_customer_provider_reference_key,
    ADD CONSTRAINT payment_methods_account_customer_gateway_reference_key
        UNIQUE (account_id, customer_id, gateway, reference_id);
