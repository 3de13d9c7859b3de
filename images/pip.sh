#!/bin/sh
# `pip` inside an image build, with the build's optional settings. Each comes from a BuildKit secret
# (mounted for one RUN, never stored in a layer or in the image's history) or from the wheelhouse:
#   /run/secrets/pipconf          a pip.conf: index-url, extra-index-url, trusted-host, ... (credentials welcome)
#   /run/secrets/pip-ca           a CA bundle for the index (a TLS-intercepting proxy, a private index)
#   /run/secrets/pip-constraints  more constraints, on top of requirements/lock.txt
#   /wheelhouse/*.whl             install offline from these wheels (`make wheelhouse`): no index at all
# Usage: sh pip.sh install [pip options] REQUIREMENTS...   (PIP_SECRETS, WHEELHOUSE, PIP: for tests)
set -eu
secrets="${PIP_SECRETS:-/run/secrets}"
wheelhouse="${WHEELHOUSE:-/wheelhouse}"
if [ -f "$secrets/pipconf" ]; then export PIP_CONFIG_FILE="$secrets/pipconf"; fi
if [ -f "$secrets/pip-ca" ]; then export PIP_CERT="$secrets/pip-ca"; fi
if [ -f "$secrets/pip-constraints" ]; then set -- "$@" -c "$secrets/pip-constraints"; fi
if ls "$wheelhouse"/*.whl >/dev/null 2>&1; then set -- "$@" --no-index --find-links "$wheelhouse"; fi
exec ${PIP:-python -m pip} "$@"
