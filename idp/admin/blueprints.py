"""The admin blueprints, filled: the pages' blueprint (defined in idp.admin.web, with the routes
the page modules add to it when imported here) and the admin API."""

from __future__ import annotations

from idp.admin import api, system_pages, user_pages, web

# Every module that adds routes to the pages' blueprint.
PAGE_MODULES = (user_pages, system_pages)
PAGES = web.admin_pages
API = api.blueprint
