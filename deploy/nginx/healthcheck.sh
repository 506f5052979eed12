#!/bin/bash
# Exits 0 when GET /health on the public port answers 200, that is when nginx, the proxy and at
# least one API replica are up. bash's /dev/tcp, as the image has neither curl nor python.
port="${PUBLIC_PORT##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 4 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "edge: /health answered: ${status}"
exit 1
