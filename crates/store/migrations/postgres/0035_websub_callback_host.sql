-- The host of each WebSub subscription's callback URL (rookery-store websub.rs), lowercased,
-- without port or user info: the hub caps the subscriptions one callback host holds
-- (`[webhooks] max_subscriptions_per_callback_host`). Rows from before have '' and count
-- from their next renewal.
ALTER TABLE websub_subscriptions ADD COLUMN callback_host TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX websub_subscriptions_by_callback_host ON websub_subscriptions (callback_host);
