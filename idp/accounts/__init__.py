"""Accounts: users, credentials, profiles and sessions at the IdP (no protocol knowledge here)."""
