-- WebSub deliveries of retractions and purges (rookery-store websub.rs, crate rookery-websub):
-- what a `websub_items` row announces. 'item': a publication (`payload` the item's);
-- 'retract': `item_id` was retracted; 'purge': every item of the node was deleted. The rows
-- are written in the transaction of the change, as publications' are.
ALTER TABLE websub_items ADD COLUMN event TEXT NOT NULL DEFAULT 'item';
