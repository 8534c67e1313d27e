-- Where an account's business copies of failure and dispute mails go (issue 13). The configured
-- default account keeps `notifications.business_email`; another account's mails go only to the
-- address its own row names, never to another business's.
ALTER TABLE accounts ADD COLUMN business_email TEXT;
