#!/bin/sh
# Renders /etc/edge/nginx.conf.template into /var/lib/edge/nginx.conf with the container's
# PUBLIC_PORT, PROXY_UPSTREAM, INTERNAL_PORT and API_UPSTREAM_SERVERS, then runs the command
# (nginx in the foreground: the template says `daemon off;`). Only these four placeholders are
# replaced, so nginx's own $variables stay as they are.
set -eu

for name in PUBLIC_PORT PROXY_UPSTREAM INTERNAL_PORT API_UPSTREAM_SERVERS; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "edge: $name is not set (see docker-compose.yml)" >&2
        exit 2
    fi
done

envsubst '${PUBLIC_PORT} ${PROXY_UPSTREAM} ${INTERNAL_PORT} ${API_UPSTREAM_SERVERS}' \
    < /etc/edge/nginx.conf.template > /var/lib/edge/nginx.conf

exec "$@"
