"""Signing in: the password, the second factor after it, a passkey alone, and what a sign-in proved
(acr/amr); one rule on who may sign in, and the browser session a sign-in makes."""
