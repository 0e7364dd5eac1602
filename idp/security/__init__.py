"""Security primitives: random tokens and digests, password hashing, encryption at rest, headers."""
