#!/bin/sh
# Run by the postgres image once, when it initialises an empty data directory
# (/docker-entrypoint-initdb.d): the roles of xnovu-roles.psql, with their passwords from the
# environment. psql passes them as variables, quoted by psql itself (:'owner_password').
set -eu
: "${XNOVU_OWNER_PASSWORD:?XNOVU_OWNER_PASSWORD must be set}"
: "${XNOVU_SERVICE_PASSWORD:?XNOVU_SERVICE_PASSWORD must be set}"
psql --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set owner_password="$XNOVU_OWNER_PASSWORD" \
    --set service_password="$XNOVU_SERVICE_PASSWORD" \
    --file "${XNOVU_ROLES_SQL:-/docker-entrypoint-initdb.d/xnovu-roles.psql}"
