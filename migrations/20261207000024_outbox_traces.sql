-- The W3C trace context of the work that wrote a reconciliation event (the worker applying a
-- provider event, an API call): the relay publishes it as the message's `traceparent` header, so
-- a subscriber continues the trace that began at the webhook.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
