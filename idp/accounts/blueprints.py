"""The account blueprints, filled: the three page blueprints (defined in idp.accounts.web, with the
routes each feature's ``pages`` module adds to them) and the account API.

A page module adds its routes when it is imported, so the factory takes the page blueprints from
here, where every page module is imported, and registers them in this order.
"""

from __future__ import annotations

from idp.accounts import api, web
from idp.accounts.apps import pages as apps
from idp.accounts.live import socket
from idp.accounts.profile import pages as profile
from idp.accounts.recovery import pages as recovery
from idp.accounts.registration import pages as registration
from idp.accounts.security import pages as security
from idp.accounts.sessions import pages as sessions
from idp.accounts.signin import pages as signin

# Every module that adds routes to a page blueprint (tests/unit/test_architecture.py checks that
# none is missing: a page module not imported here would leave its URLs unanswered).
PAGE_MODULES = (signin, registration, recovery, profile, apps, security, sessions)
# The page blueprints (their errors render HTML) and the JSON account API.
PAGES = (web.account_pages, web.mfa_pages, web.session_pages)
API = api.blueprint
# The live notification socket (JSON errors: it speaks to programs, not pages).
LIVE = socket.blueprint
