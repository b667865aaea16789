-- When a queue last changed, so that the sweeper can forget a queue that
-- has been idle for the retention period with default settings: without
-- it, every resource name ever used stayed in GET /queues and /metrics,
-- which grows without bound for fleets that name resources after
-- short-lived things. Set by every write that moves one of the queue's
-- commands into or out of blocked, ready or leased, by a settings change,
-- and by an agent asking for work (at most once a minute). Queues that
-- exist when this runs count as active now.

-- +goose Up
ALTER TABLE queues ADD COLUMN last_active_at INTEGER NOT NULL DEFAULT 0;
UPDATE queues SET last_active_at = unixepoch() * 1000000000;

-- +goose Down
ALTER TABLE queues DROP COLUMN last_active_at;
