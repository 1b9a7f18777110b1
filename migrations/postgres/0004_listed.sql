-- A second counter beside Version: every registration and account deletion raises Listed in
-- its own transaction, so that a server keeps the client list it last read (for list
-- replies) until a round begins with Listed moved.
ALTER TABLE client_changes ADD COLUMN Listed BIGINT NOT NULL DEFAULT 0;
