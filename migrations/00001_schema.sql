-- spin-broker's schema. Times are Unix nanoseconds (UTC); durations are
-- nanoseconds. Counts on packages and queues are kept by triggers, so every
-- statement that moves a command, bulk or single, keeps them exact (until
-- 00002, which moves them into the store's writer).

-- +goose Up
-- +goose StatementBegin
CREATE TABLE packages (
    id               TEXT    NOT NULL PRIMARY KEY,
    created_at       INTEGER NOT NULL,
    enqueued_at      INTEGER,
    cancelled_at     INTEGER, -- set when a client cancelled it before it finished
    last_finished_at INTEGER, -- the latest finished_at of its commands
    total            INTEGER NOT NULL DEFAULT 0,
    n_staged         INTEGER NOT NULL DEFAULT 0,
    n_blocked        INTEGER NOT NULL DEFAULT 0,
    n_ready          INTEGER NOT NULL DEFAULT 0,
    n_leased         INTEGER NOT NULL DEFAULT 0,
    n_succeeded      INTEGER NOT NULL DEFAULT 0,
    n_failed         INTEGER NOT NULL DEFAULT 0,
    n_cancelled      INTEGER NOT NULL DEFAULT 0,
    -- The package state is a function of the counts (API.md, States), stored
    -- so that lists filter on it through an index.
    state TEXT GENERATED ALWAYS AS (CASE
        WHEN cancelled_at IS NOT NULL THEN 'cancelled'
        WHEN enqueued_at IS NULL THEN 'staging'
        WHEN n_succeeded = total THEN 'succeeded'
        WHEN n_succeeded + n_failed + n_cancelled = total THEN 'failed'
        WHEN n_leased + n_succeeded + n_failed + n_cancelled = 0 THEN 'queued'
        ELSE 'running' END) STORED
) STRICT;
-- +goose StatementEnd

CREATE INDEX packages_created ON packages (created_at, id);
CREATE INDEX packages_state_created ON packages (state, created_at, id);

-- +goose StatementBegin
CREATE TABLE commands (
    id               TEXT    NOT NULL PRIMARY KEY,
    package_id       TEXT    NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    pos              INTEGER NOT NULL, -- order of addition within the package
    key              TEXT,
    resource         TEXT    NOT NULL,
    action           TEXT    NOT NULL,
    parameters       TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('staged', 'blocked', 'ready', 'leased', 'succeeded', 'failed', 'cancelled')),
    seq              INTEGER,          -- global enqueue order, set at enqueue
    pending_deps     INTEGER NOT NULL DEFAULT 0 CHECK (pending_deps >= 0),
    n_deps           INTEGER NOT NULL DEFAULT 0, -- dependencies given; 0 spares answers a query
    n_dependents     INTEGER NOT NULL DEFAULT 0, -- commands that depend on it; 0 spares a success the release
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_duration   INTEGER,          -- the command's own lease, if it asked for one
    lease_token      TEXT,
    lease_ttl        INTEGER,          -- the duration the current lease was granted for
    lease_expires_at INTEGER,
    not_before       INTEGER,          -- a client's delay: blocked until then
    backoff_until    INTEGER,          -- a retry back-off: ready, but not deliverable until then
    ready_at         INTEGER,          -- when it last became ready
    reason           TEXT,
    output           TEXT,
    cancelled_by     TEXT,             -- the direct dependency whose failure cancelled it
    created_at       INTEGER NOT NULL,
    enqueued_at      INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER
) STRICT;
-- +goose StatementEnd

CREATE UNIQUE INDEX commands_package_key ON commands (package_id, key) WHERE key IS NOT NULL;
CREATE INDEX commands_package ON commands (package_id, pos);
-- The ready query reads only this index: the deliverable commands of one
-- resource in queue order. Queries must say state = 'ready' word for word, or
-- SQLite silently skips a partial index.
CREATE INDEX commands_ready ON commands (resource, seq) WHERE state = 'ready';
-- Held leases, to settle expired ones and to find the next expiry.
CREATE INDEX commands_leased ON commands (resource, lease_expires_at) WHERE state = 'leased';
-- Commands blocked only by their not_before.
CREATE INDEX commands_delayed ON commands (resource, not_before) WHERE state = 'blocked' AND pending_deps = 0;
-- Blocked commands in queue order. With commands_ready and commands_leased
-- it lists a queue's unfinished commands (GET /queues/{resource}); one
-- index over all three states would be written twice in every command's
-- life, for a page that only people read.
CREATE INDEX commands_blocked ON commands (resource, seq) WHERE state = 'blocked';
-- The first failure of a package (causer), and the commands a cascade cancelled.
CREATE INDEX commands_failures ON commands (package_id, finished_at, seq) WHERE state IN ('failed', 'cancelled');
CREATE INDEX commands_cancelled_by ON commands (cancelled_by) WHERE cancelled_by IS NOT NULL;

CREATE TABLE command_deps (
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    PRIMARY KEY (command_id, depends_on)
) STRICT;

CREATE INDEX command_deps_depends_on ON command_deps (depends_on);

-- +goose StatementBegin
CREATE TABLE queues (
    resource    TEXT    NOT NULL PRIMARY KEY,
    concurrency INTEGER NOT NULL DEFAULT 1 CHECK (concurrency >= 1),
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    n_blocked   INTEGER NOT NULL DEFAULT 0,
    n_ready     INTEGER NOT NULL DEFAULT 0,
    n_leased    INTEGER NOT NULL DEFAULT 0
) STRICT;
-- +goose StatementEnd

CREATE TABLE counters (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

INSERT INTO counters (name, value) VALUES ('seq', 0);

-- Terminal transitions per minute, for the dashboard's chart.
-- +goose StatementBegin
CREATE TABLE completions (
    minute    INTEGER NOT NULL PRIMARY KEY, -- Unix minutes
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0
) STRICT;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TABLE idempotency (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    hash       BLOB    NOT NULL,
    status     INTEGER NOT NULL,
    body       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;
-- +goose StatementEnd

CREATE INDEX idempotency_created ON idempotency (created_at);

-- +goose StatementBegin
CREATE TABLE tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'client', 'agent', 'viewer')),
    resource   TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    CHECK ((role = 'agent') = (resource IS NOT NULL))
) STRICT;
-- +goose StatementEnd

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

-- +goose Down
DROP TABLE tokens;
DROP TABLE idempotency;
DROP TABLE completions;
DROP TABLE counters;
DROP TABLE queues;
DROP TABLE command_deps;
DROP TABLE commands;
DROP TABLE packages;
