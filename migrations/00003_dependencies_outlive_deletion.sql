-- A command's dependencies stay as they were given when a dependency's
-- package is deleted (DELETE /packages/{id}, or the sweeper's retention):
-- the edge no longer references commands (id), so deleting the dependency
-- no longer deletes it. Edges still go with the command that holds them.
-- Queries that need the dependency itself join commands and so skip an
-- edge to a deleted command, as they did when it was deleted with it.

-- +goose Up
CREATE TABLE command_deps_new (
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL, -- may name a deleted command
    PRIMARY KEY (command_id, depends_on)
) STRICT;
INSERT INTO command_deps_new (command_id, depends_on)
    SELECT command_id, depends_on FROM command_deps ORDER BY rowid;
DROP TABLE command_deps;
ALTER TABLE command_deps_new RENAME TO command_deps;
CREATE INDEX command_deps_depends_on ON command_deps (depends_on);

-- +goose Down
CREATE TABLE command_deps_old (
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    PRIMARY KEY (command_id, depends_on)
) STRICT;
INSERT INTO command_deps_old (command_id, depends_on)
    SELECT command_id, depends_on FROM command_deps
    WHERE depends_on IN (SELECT id FROM commands) ORDER BY rowid;
DROP TABLE command_deps;
ALTER TABLE command_deps_old RENAME TO command_deps;
CREATE INDEX command_deps_depends_on ON command_deps (depends_on);
