-- The per-state counts on packages and queues, the packages' last finish
-- time and the completions per minute are kept by the store's writer, one
-- update per package and queue an operation touches (internal/store/counts.go),
-- instead of by these triggers, which updated the same rows once per command.

-- +goose Up
DROP TRIGGER commands_insert;
DROP TRIGGER commands_state;
DROP TRIGGER commands_queue_counts;
DROP TRIGGER commands_completions;
DROP TRIGGER commands_delete;

-- +goose Down
-- +goose StatementBegin
CREATE TRIGGER commands_insert AFTER INSERT ON commands BEGIN
    UPDATE packages SET
        total       = total + 1,
        n_staged    = n_staged    + (NEW.state = 'staged'),
        n_blocked   = n_blocked   + (NEW.state = 'blocked'),
        n_ready     = n_ready     + (NEW.state = 'ready'),
        n_leased    = n_leased    + (NEW.state = 'leased'),
        n_succeeded = n_succeeded + (NEW.state = 'succeeded'),
        n_failed    = n_failed    + (NEW.state = 'failed'),
        n_cancelled = n_cancelled + (NEW.state = 'cancelled')
    WHERE id = NEW.package_id;
    UPDATE queues SET
        n_blocked = n_blocked + (NEW.state = 'blocked'),
        n_ready   = n_ready   + (NEW.state = 'ready'),
        n_leased  = n_leased  + (NEW.state = 'leased')
    WHERE resource = NEW.resource AND NEW.state IN ('blocked', 'ready', 'leased');
END;
-- +goose StatementEnd

-- One trigger per table it maintains, each with a WHEN, so that a
-- transition runs only the statements it concerns.
-- +goose StatementBegin
CREATE TRIGGER commands_state AFTER UPDATE OF state ON commands WHEN OLD.state <> NEW.state BEGIN
    UPDATE packages SET
        n_staged    = n_staged    - (OLD.state = 'staged')    + (NEW.state = 'staged'),
        n_blocked   = n_blocked   - (OLD.state = 'blocked')   + (NEW.state = 'blocked'),
        n_ready     = n_ready     - (OLD.state = 'ready')     + (NEW.state = 'ready'),
        n_leased    = n_leased    - (OLD.state = 'leased')    + (NEW.state = 'leased'),
        n_succeeded = n_succeeded - (OLD.state = 'succeeded') + (NEW.state = 'succeeded'),
        n_failed    = n_failed    - (OLD.state = 'failed')    + (NEW.state = 'failed'),
        n_cancelled = n_cancelled - (OLD.state = 'cancelled') + (NEW.state = 'cancelled'),
        last_finished_at = CASE WHEN NEW.finished_at > coalesce(last_finished_at, 0)
                           THEN NEW.finished_at ELSE last_finished_at END
    WHERE id = NEW.package_id;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER commands_queue_counts AFTER UPDATE OF state ON commands
WHEN OLD.state <> NEW.state
 AND (OLD.state IN ('blocked', 'ready', 'leased') OR NEW.state IN ('blocked', 'ready', 'leased')) BEGIN
    UPDATE queues SET
        n_blocked = n_blocked - (OLD.state = 'blocked') + (NEW.state = 'blocked'),
        n_ready   = n_ready   - (OLD.state = 'ready')   + (NEW.state = 'ready'),
        n_leased  = n_leased  - (OLD.state = 'leased')  + (NEW.state = 'leased')
    WHERE resource = NEW.resource;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER commands_completions AFTER UPDATE OF state ON commands
WHEN OLD.state <> NEW.state AND NEW.state IN ('succeeded', 'failed', 'cancelled') AND NEW.finished_at IS NOT NULL BEGIN
    INSERT INTO completions (minute, succeeded, failed, cancelled)
    VALUES (NEW.finished_at / 60000000000, NEW.state = 'succeeded', NEW.state = 'failed', NEW.state = 'cancelled')
    ON CONFLICT (minute) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed    = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER commands_delete AFTER DELETE ON commands BEGIN
    UPDATE packages SET
        total       = total - 1,
        n_staged    = n_staged    - (OLD.state = 'staged'),
        n_blocked   = n_blocked   - (OLD.state = 'blocked'),
        n_ready     = n_ready     - (OLD.state = 'ready'),
        n_leased    = n_leased    - (OLD.state = 'leased'),
        n_succeeded = n_succeeded - (OLD.state = 'succeeded'),
        n_failed    = n_failed    - (OLD.state = 'failed'),
        n_cancelled = n_cancelled - (OLD.state = 'cancelled')
    WHERE id = OLD.package_id;
    UPDATE queues SET
        n_blocked = n_blocked - (OLD.state = 'blocked'),
        n_ready   = n_ready   - (OLD.state = 'ready'),
        n_leased  = n_leased  - (OLD.state = 'leased')
    WHERE resource = OLD.resource AND OLD.state IN ('blocked', 'ready', 'leased');
END;
-- +goose StatementEnd
