"""Browser sessions (single sign-on), the devices they come from, and the sessions page."""
