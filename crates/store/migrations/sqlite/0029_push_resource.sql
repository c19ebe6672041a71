-- XEP-0357 per device: the resource of the session that enabled a registration, so that a
-- device is woken while another of the account's devices is online (rookery-im push.rs).
-- Empty for registrations made before this migration: those devices are woken only when a
-- message is held for the account, as before.
ALTER TABLE push_registrations ADD COLUMN resource TEXT NOT NULL DEFAULT '';
