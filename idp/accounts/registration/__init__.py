"""Registration: creating an account yourself, and confirming its email address."""
