"""Storage: the database (engine, models, repositories), the key-value store and blob storage.

It imports nothing else of idp."""
