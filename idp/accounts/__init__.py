"""Accounts: users, credentials, profiles and sessions at the IdP. No protocol code here: the
account API reads the tokens idp.oauth issues through one function (``api.authenticate``), and the
protocol reacts to account events (idp.runtime).

One subpackage per feature, each with its domain modules (plain arguments, no Quart) and a
``pages.py`` for browsers:

- ``signin/``: the password, the second factor, passkey sign-in, pending sign-ins, acr/amr, who may
  sign in (``eligibility``) and the session a sign-in makes (``finish``);
- ``registration/``: sign-up and email verification;
- ``recovery/``: forgotten, reset and changed passwords;
- ``profile/``: profile claims, email change, picture, activity, export, deletion;
- ``security/``: TOTP, recovery codes, passkeys, their enrolment, the WebAuthn relying party;
- ``sessions/``: the session store, devices, the sessions page;
- ``apps/``: consents and the connected-apps page.

Shared by several features: ``context`` (AccountContext, deferred mail), ``users``, ``links``,
``password_policy``, ``notifications``, ``account_status`` (the administrator's). The web layer is
``web`` (the page blueprints and what the pages and the API share), ``api`` (the account API) and
``blueprints`` (all of them, for the factory).
"""
