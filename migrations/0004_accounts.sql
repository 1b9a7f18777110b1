-- Account deletion (protocol §E8): the ids of deleted accounts, never given out again, and
-- the place each held in registration order (its rowid in clients), never given again
-- either, so that a cursor of the account list stays valid across deletions.
CREATE TABLE IF NOT EXISTS deleted_clients (
    ID       BLOB PRIMARY KEY NOT NULL,
    Position INTEGER NOT NULL
);
