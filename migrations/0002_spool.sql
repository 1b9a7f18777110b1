-- Large contents live in files of the spool folder beside the database (`<db>.spool/`).
-- SpoolFile names the file (NULL: the content is in Content, as before); SpoolSize is its
-- length, checked at start-up. A spooled row's Content is empty.
ALTER TABLE messages ADD COLUMN SpoolFile TEXT;
ALTER TABLE messages ADD COLUMN SpoolSize INTEGER;
