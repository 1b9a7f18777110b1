-- Start-up recovery reads the spooled messages alone (protocol §7's table, unchanged). Few
-- messages are spooled, so a partial index lets it skip the others instead of scanning every
-- message; an insert of an inline content (SpoolFile NULL) never touches the index.
CREATE INDEX IF NOT EXISTS messages_spool_file ON messages (SpoolFile, SpoolSize)
    WHERE SpoolFile IS NOT NULL;
