-- The tables and columns the MessageU specification names (protocol §7).
-- IF NOT EXISTS lets the server adopt a database another MessageU server created.
CREATE TABLE IF NOT EXISTS clients (
    ID        BLOB PRIMARY KEY NOT NULL,
    UserName  TEXT UNIQUE NOT NULL,
    PublicKey BLOB NOT NULL,
    LastSeen  TEXT
);

-- ID is the message id on the wire; the implicit rowid keeps send order even after the
-- 32-bit message ids wrap around.
CREATE TABLE IF NOT EXISTS messages (
    ID         INTEGER UNIQUE NOT NULL,
    ToClient   BLOB NOT NULL,
    FromClient BLOB NOT NULL,
    Type       INTEGER NOT NULL,
    Content    BLOB NOT NULL
);

CREATE INDEX IF NOT EXISTS messages_to_client ON messages (ToClient);
