"""Pure parsing and validation of imported files (contacts, events). No database access here."""
