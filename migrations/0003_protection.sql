-- Protected accounts (protocol §E4): 1 once the owner, authenticated, has protected the
-- account; requests naming it are then refused on connections not authenticated as it.
ALTER TABLE clients ADD COLUMN Protected INTEGER NOT NULL DEFAULT 0;
