#!/bin/sh
# MAP entry point (/opt/holoscan/bin/entrypoint): raise the stack limit holoscan asks for, then
# run the application as app.json's "command" says: python3 /opt/holoscan/app [ARGS].
# Arguments go to the application (-i/-o/-m override the HOLOSCAN_* paths).
want=32768
if ! ulimit -s "$want" 2>/dev/null; then
    cur=$(ulimit -s)
    if [ "$cur" != unlimited ] && [ "$cur" -lt "$want" ]; then
        echo "osteoscreen: warning: stack limit is ${cur} KiB, holoscan wants ${want}" \
             "(docker run --ulimit stack=$((want * 1024)))" >&2
    fi
fi
exec python3 "${HOLOSCAN_APPLICATION:-/opt/holoscan/app}" "$@"
