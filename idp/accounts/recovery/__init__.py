"""Passwords: forgotten (a reset link), reset and changed."""
