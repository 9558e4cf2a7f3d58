"""The audit database: schema, engine, migrations and the queries the stages use."""
