#!/bin/sh
# Makes the running nginx read its configuration again, which resolves the upstream host names
# anew: after `docker compose up -d --scale inference-api=N`, new replicas get requests only
# once this ran (`docker compose exec edge edge-reload`). Running streams are not cut.
set -eu
nginx -p /var/lib/edge -c /var/lib/edge/nginx.conf -e stderr -t -q
exec nginx -p /var/lib/edge -c /var/lib/edge/nginx.conf -e stderr -s reload
