-- When a token stops working (`spinbroker token create --expires 90d`), in
-- nanoseconds since the epoch like every time column; NULL never, which is
-- what every token made before this had.

-- +goose Up
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;

-- +goose Down
ALTER TABLE tokens DROP COLUMN expires_at;
