#!/bin/sh
# Generate the secrets compose.yaml reads (deploy/secrets/*, mode 0600, never committed). Run once;
# keep the key-encryption key for as long as the database (it encrypts the signing keys).
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
umask 077
gen() { python3 -c "import secrets; print(secrets.token_urlsafe($1))"; }
[ -s "$dir/postgres_password" ] || gen 32 > "$dir/postgres_password"
[ -s "$dir/cookie_secret" ] || gen 48 > "$dir/cookie_secret"
[ -s "$dir/metrics_token" ] || gen 32 > "$dir/metrics_token"
[ -s "$dir/key_encryption_key" ] || python3 -c \
  "import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b'=').decode())" \
  > "$dir/key_encryption_key"
printf 'postgresql+asyncpg://idp:%s@postgres:5432/idp\n' "$(cat "$dir/postgres_password")" > "$dir/database_url"
# Compose bind-mounts each file read-only into containers running as uid 10001 (idp) and 999
# (postgres), so the files are readable there; the directory keeps everyone else on this host out.
chmod 0700 "$dir"
chmod 0644 "$dir"/postgres_password "$dir"/cookie_secret "$dir"/metrics_token "$dir"/key_encryption_key "$dir"/database_url
echo "secrets written to $dir"
