#!/bin/sh
# As the official image does: redis-server as the redis user, protected mode off (the container
# network is the boundary), its files in /data (the AOF volume).
set -eu
if [ "${1:-}" = redis-server ]; then
    chown redis:redis /data
    shift
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no --dir /data "$@"
fi
exec "$@"
