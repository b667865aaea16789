-- Parameters longer than a few KiB live in a table of their own, and the
-- command's row holds '' in their place (a command's parameters are
-- otherwise always a JSON object, never empty). SQLite rewrites a whole
-- row on every UPDATE that changes its size, overflow pages and all, and a
-- command's row is updated at least twice (its lease and its completion):
-- with 1 MiB of parameters inline, each of those wrote about 240 pages to
-- the WAL and held the one writer, and every client behind it, for
-- milliseconds. Here they are written once, when the command is created.
-- Commands created before this keep their parameters in their rows; both
-- are read the same way.

-- +goose Up
CREATE TABLE command_parameters (
    command_id TEXT NOT NULL PRIMARY KEY REFERENCES commands (id) ON DELETE CASCADE,
    parameters TEXT NOT NULL
) STRICT;

-- +goose Down
UPDATE commands SET parameters = (SELECT p.parameters FROM command_parameters p WHERE p.command_id = commands.id)
WHERE octet_length(parameters) = 0;
DROP TABLE command_parameters;
