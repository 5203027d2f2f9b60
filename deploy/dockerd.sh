#!/usr/bin/env bash
# A private Docker engine for building and testing the MAP where no engine runs (CI runners,
# containers). Meant to be sourced by deploy/map.sh:
#   engine_up STATE_DIR   -> uses a running engine if `docker info` answers; otherwise starts
#                            dockerd (vfs storage, no bridge, no iptables) with its own data-root,
#                            exec-root and socket under STATE_DIR and exports DOCKER_HOST
#   engine_down           -> stops the engine engine_up started (nothing else)
# vfs is slow and disk-hungry but needs no overlay/kernel support; --bridge none and
# --iptables=false leave the host's network alone: builds use --network host, runs --network none.

ENGINE_STARTED=""
ENGINE_PIDFILE=""

engine_up() {
    local state=$1
    if docker info >/dev/null 2>&1; then
        echo "map: using the running Docker engine (${DOCKER_HOST:-default socket})"
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "map: error: dockerd not found (apt-get install docker.io)" >&2
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "map: error: no Docker engine answers and starting one needs root" >&2
        return 1
    fi
    mkdir -p "$state/data" "$state/exec"
    ENGINE_PIDFILE="$state/dockerd.pid"
    if [ -f "$ENGINE_PIDFILE" ] && kill -0 "$(cat "$ENGINE_PIDFILE")" 2>/dev/null; then
        echo "map: error: a private dockerd from an earlier run is still alive (pid $(cat "$ENGINE_PIDFILE"));" \
             "stop it with: kill $(cat "$ENGINE_PIDFILE")" >&2
        return 1
    fi
    export DOCKER_HOST="unix://$state/docker.sock"
    # nice: the engine, its builds and containers take CPU last on a shared machine.
    nice -n "${MAP_NICE:-10}" dockerd \
        --storage-driver vfs --bridge none --iptables=false --ip-masq=false \
        --data-root "$state/data" --exec-root "$state/exec" \
        --pidfile "$ENGINE_PIDFILE" --host "$DOCKER_HOST" \
        >"$state/dockerd.log" 2>&1 &
    ENGINE_STARTED=$!
    local i
    for i in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            echo "map: started a private dockerd (pid $ENGINE_STARTED, $DOCKER_HOST, log $state/dockerd.log)"
            return 0
        fi
        if ! kill -0 "$ENGINE_STARTED" 2>/dev/null; then break; fi
        sleep 1
    done
    echo "map: error: dockerd did not start; last lines of $state/dockerd.log:" >&2
    tail -5 "$state/dockerd.log" >&2
    engine_down
    return 1
}

engine_down() {
    [ -n "$ENGINE_STARTED" ] || return 0
    local pid=$ENGINE_STARTED i
    ENGINE_STARTED=""
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || { echo "map: stopped the private dockerd"; return 0; }
        sleep 1
    done
    echo "map: dockerd did not stop in 30 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
}
