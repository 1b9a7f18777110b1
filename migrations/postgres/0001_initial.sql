-- The PostgreSQL store's schema: the tables and columns of the SQLite store (protocol §7), in
-- PostgreSQL's types (unquoted, so the names are case-insensitive as in SQLite). Two columns
-- stand for SQLite's rowids: clients.Position (registration order, the account list's
-- cursor) and messages.Seq (send order across message id wrap-around); both come from
-- sequences, which never give a value twice, even to servers sharing the database.
CREATE TABLE clients (
    ID        BYTEA PRIMARY KEY NOT NULL,
    UserName  TEXT UNIQUE NOT NULL,
    PublicKey BYTEA NOT NULL,
    LastSeen  TEXT,
    Protected INTEGER NOT NULL DEFAULT 0,
    Position  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE deleted_clients (
    ID       BYTEA PRIMARY KEY NOT NULL,
    Position BIGINT NOT NULL
);

-- Large contents, in the database: one row each, and their bytes in chunks of at most
-- 256 KiB, so that neither writing nor reading one holds more than a chunk in memory.
-- Stored is when the content was last made durable: an unreferenced content older than a
-- while belongs to an upload whose message never committed.
CREATE TABLE contents (
    Key    TEXT PRIMARY KEY NOT NULL,
    Size   BIGINT NOT NULL,
    Stored TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE content_chunks (
    Key  TEXT NOT NULL REFERENCES contents (Key) ON DELETE CASCADE,
    Seq  INTEGER NOT NULL,
    Data BYTEA NOT NULL,
    PRIMARY KEY (Key, Seq)
);
-- Contents are end-to-end encrypted: compressing them would only cost time.
ALTER TABLE content_chunks ALTER COLUMN Data SET STORAGE EXTERNAL;

-- ID is the u32 message id on the wire. SpoolFile names the row's large content (its key
-- in contents; NULL: the content is in Content) and SpoolSize is its length, as in SQLite.
CREATE TABLE messages (
    ID         BIGINT UNIQUE NOT NULL CHECK (ID BETWEEN 1 AND 4294967295),
    ToClient   BYTEA NOT NULL,
    FromClient BYTEA NOT NULL,
    Type       INTEGER NOT NULL,
    Content    BYTEA NOT NULL,
    SpoolFile  TEXT REFERENCES contents (Key),
    SpoolSize  BIGINT,
    Seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY
);

CREATE INDEX messages_to_client ON messages (ToClient, Seq);
-- Message ids come from this sequence (wire id = value mod 4,294,967,295, plus 1): every
-- server on the database draws from it, and, as a sequence never goes back, not even when a
-- transaction rolls back, no id is given twice (protocol §3.4) until it wraps.
CREATE SEQUENCE message_ids MINVALUE 0 START 0;
CREATE INDEX messages_spool_file ON messages (SpoolFile) WHERE SpoolFile IS NOT NULL;
