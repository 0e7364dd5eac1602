"""Second factors: TOTP, recovery codes and passkeys, their enrolment and the security page."""
