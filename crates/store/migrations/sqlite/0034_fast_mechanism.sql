-- XEP-0484 FAST tokens (rookery-store fast.rs), per token now:
-- * the HT mechanism the client asked for it with (`<request-token mechanism>`, e.g.
--   'HT-SHA-256-EXPR'): §3.3 binds a token to it, and a use with another mechanism (one
--   without channel binding, say) is refused. Rows from before have NULL, the mechanism
--   unknown: rookery-c2s accepts those only with a mechanism without channel binding, which
--   keeps the common case (-NONE, as xmpp.js asks) logged in; a client that asked for -EXPR
--   logs in once with its password and gets a bound token. Such rows last at most a token
--   lifetime, and go at the first rotation.
-- * its own `count` (§3.1: reset to zero when the token changes): `last_count` is the
--   current token's, `previous_count` the replaced one's, moved with it on rotation. A
--   replaced token of a row from before keeps the count they shared, so nothing replays.
ALTER TABLE fast_tokens ADD COLUMN current_mechanism TEXT;
ALTER TABLE fast_tokens ADD COLUMN previous_mechanism TEXT;
ALTER TABLE fast_tokens ADD COLUMN previous_count INTEGER NOT NULL DEFAULT 0;
UPDATE fast_tokens SET previous_count = last_count WHERE previous_key IS NOT NULL;
