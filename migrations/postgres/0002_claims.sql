-- Claims: a pull reply that one server is writing holds its messages against the servers
-- sharing the database, so that no second pull reply, through any server, carries them.
-- Node is the claiming server's number (drawn at its start); Until ends a dead server's hold.
-- A claim goes with its message's deletion. The messages table stays as in the SQLite store.
CREATE TABLE claims (
    ID    BIGINT PRIMARY KEY NOT NULL REFERENCES messages (ID) ON DELETE CASCADE,
    Node  BIGINT NOT NULL,
    Until TIMESTAMPTZ NOT NULL
);
CREATE INDEX claims_node ON claims (Node);
-- Each server's number, drawn at its start: never the same for two servers.
CREATE SEQUENCE node_numbers;
