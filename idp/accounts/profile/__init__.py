"""The account's own data: profile claims, email address, picture, activity, export and deletion."""
