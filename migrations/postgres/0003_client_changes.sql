-- A counter every account deletion and protection change raises in its own transaction: a
-- server reads it with each round's BEGIN, and drops what it knows of clients when it moved,
-- so that its in-memory caller and destination checks never outlive a change committed
-- before the round began, whatever server made it.
CREATE TABLE client_changes (Version BIGINT NOT NULL);
INSERT INTO client_changes (Version) VALUES (0);
