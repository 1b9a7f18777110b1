-- Message ids are never given twice (protocol §3.4): the server reserves them in blocks and
-- keeps here how far it has reserved, so that after a restart numbering goes on past every id
-- it may have handed out, even when no message is stored any more. One row; Reserved counts
-- ids from 0 (id = Reserved mod 4,294,967,295, plus 1).
CREATE TABLE IF NOT EXISTS message_ids (
    Reserved INTEGER NOT NULL
);
