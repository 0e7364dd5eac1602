"""Connected applications: the consents a user gave, listed and withdrawn on the account."""
