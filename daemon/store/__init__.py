"""The SQL store: schema, engine, migrations and the queries other layers call (an edge: does I/O)."""
