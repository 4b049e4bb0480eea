#!/usr/bin/env bash
# What the annotation app's browser and PostgreSQL tests need, from Debian's packages:
# Chromium and ChromeDriver (Selenium drives them), and a PostgreSQL server on 127.0.0.1:5432
# with the password 'postgres' for the user postgres. Without them those tests skip, saying why.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo -n"; else
        echo "test-services: not root and no sudo: browser and PostgreSQL tests will skip" >&2
        exit 0
    fi
fi
packages="chromium chromium-driver postgresql"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q $missing >/dev/null \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q $missing >/dev/null; }
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q online; then
    pg_lsclusters -h | grep -q "^$version main" || $SUDO pg_createcluster "$version" main >/dev/null
    $SUDO pg_ctlcluster "$version" main start
fi
$SUDO su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
echo "test-services: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), PostgreSQL $version on 127.0.0.1:5432"
