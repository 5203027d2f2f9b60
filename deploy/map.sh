#!/usr/bin/env bash
# Build (`make map`) and test (`make map-test`) the osteoscreen MAP with a local Docker engine.
#
#   deploy/map.sh build   docker.io + debootstrap if missing; a private dockerd if no engine
#                         answers; a local Debian base image if no registry is reachable; then
#                         DOCKER_BUILDKIT=0 docker build --network host (the Dockerfile).
#   deploy/map.sh test    runs the image with --network none on a generated demo study and
#                         checks sr.dcm/seg.dcm/summary.json and dciodvfy; then with no input,
#                         with non-CT objects only, and with a read-only output folder.
# Both stop the engine they started. Settings (environment): MAP_IMAGE, MAP_MODELS (models
# folder to package), MAP_BASE_IMAGE (skip the base-image logic), MAP_TORCH_WHEEL (a CPU torch
# wheel to build offline from), MAP_TORCH_INDEX_URL, MAP_VENV (venv with osteoscreen, for
# the demo study), MAP_STUDY_ARGS (extra `osteoscreen example` options), MAP_NICE.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STATE="$ROOT/build/map"
IMAGE=${MAP_IMAGE:-osteoscreen-map:0.1.0}
MODELS=${MAP_MODELS:-models}
LOCAL_BASE=osteoscreen/base:bookworm
NICE=${MAP_NICE:-10}
export MAP_NICE=$NICE
# The Docker 20.10 engine in Debian bookworm speaks API 1.41; newer clients negotiate down.
export DOCKER_BUILDKIT=0

# shellcheck source=deploy/dockerd.sh
source "$ROOT/deploy/dockerd.sh"
trap engine_down EXIT
trap 'exit 130' INT TERM

say() { echo "map: $*"; }
die() { echo "map: error: $*" >&2; exit 1; }

apt_install() {  # apt_install PACKAGE... (root only)
    [ "$(id -u)" = 0 ] || die "missing $*; install them (apt-get install -y $*) or run as root"
    say "installing $* (apt-get)"
    nice -n "$NICE" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive nice -n "$NICE" apt-get install -y -qq "$@" >/dev/null
}

need_engine() {
    local pkgs=()
    command -v docker >/dev/null || pkgs+=(docker.io)
    if ! docker info >/dev/null 2>&1; then
        command -v dockerd >/dev/null || pkgs+=(docker.io)
    fi
    [ "${1:-}" = with-debootstrap ] && ! command -v debootstrap >/dev/null && pkgs+=(debootstrap)
    if [ ${#pkgs[@]} -gt 0 ]; then apt_install $(printf '%s\n' "${pkgs[@]}" | sort -u); fi
    engine_up "$STATE/engine"
}

check_models() {
    local m
    for m in vbnet_coarse vbnet_fine densenet_classifier densenet_regressor; do
        [ -f "$MODELS/$m/models/model.ts" ] && [ -f "$MODELS/$m/configs/metadata.json" ] \
            || die "model bundle $MODELS/$m is incomplete (run \`make models\` or set MAP_MODELS=DIR)"
    done
}

choose_base() {
    if [ -n "${MAP_BASE_IMAGE:-}" ]; then
        BASE=$MAP_BASE_IMAGE
    elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        BASE=$LOCAL_BASE
    elif timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        BASE=debian:bookworm-slim
    else
        say "no registry reachable: making the base image $LOCAL_BASE locally (debootstrap)"
        command -v debootstrap >/dev/null || apt_install debootstrap
        "$ROOT/deploy/base-image.sh" "$LOCAL_BASE" "$STATE/base"
        BASE=$LOCAL_BASE
    fi
    say "base image: $BASE"
}

stage() {
    # Build inputs that are not in git: the models to package, a CPU torch wheel and the
    # host's CA bundle (pip inside the build must trust what the host's pip trusts).
    rm -rf "$STATE/extra" "$STATE/models"
    mkdir -p "$STATE/extra"
    # Each bundle's configs/ and models/ (not training checkpoints), and hu_rule.json.
    local m
    for m in vbnet_coarse vbnet_fine densenet_classifier densenet_regressor; do
        mkdir -p "$STATE/models/$m"
        cp -a "$MODELS/$m/configs" "$MODELS/$m/models" "$STATE/models/$m/"
    done
    [ -f "$MODELS/hu_rule.json" ] && cp "$MODELS/hu_rule.json" "$STATE/models/"
    say "models from $MODELS ($(du -sh "$STATE/models" | cut -f1))"
    local ca=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
    [ -n "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] && cp "$ca" "$STATE/extra/ca.crt"
    TORCH_INDEX_URL=${MAP_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
    local wheel=${MAP_TORCH_WHEEL:-}
    if [ -z "$wheel" ] && [ -z "${MAP_TORCH_INDEX_URL:-}" ]; then
        wheel=$(ls /opt/wheels/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
    fi
    if [ -n "$wheel" ]; then
        [ -f "$wheel" ] || die "MAP_TORCH_WHEEL=$wheel not found"
        cp "$wheel" "$STATE/extra/"
        TORCH_INDEX_URL=""  # offline: torch only from the staged wheel
        say "torch from $(basename "$wheel") (the PyTorch CPU index is not used)"
    else
        say "torch from $TORCH_INDEX_URL"
    fi
}

cmd_build() {
    check_models
    need_engine with-debootstrap
    choose_base
    stage
    local t0 t1 size
    t0=$(date +%s)
    say "building $IMAGE (legacy builder, --network host)"
    # A failed build must not leave the previous image passing for the new one.
    docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
    local rc=0
    nice -n "$NICE" docker build --network host --force-rm \
        --build-arg BASE_IMAGE="$BASE" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        --build-arg EXTRA_DIR=build/map/extra \
        --build-arg MODELS_DIR=build/map/models \
        -t "$IMAGE" -f Dockerfile . 2>&1 | { grep --line-buffered -v -E '^ ?(---> |Removing intermediate|DEPRECATED|  *(BuildKit|Install the buildx|https://docs.docker.com/go/buildx))' || true; } || rc=$?
    # The vfs storage driver keeps a full copy of every layer: drop the ones nothing uses.
    docker image prune -f >/dev/null 2>&1 || true
    [ "$rc" -eq 0 ] || die "docker build failed (exit $rc)"
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "docker build failed"
    t1=$(date +%s)
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    say "built $IMAGE in $((t1 - t0)) s; image size $(awk -v s="$size" 'BEGIN{printf "%.2f GB", s/1e9}')"
    printf '{"image": "%s", "base": "%s", "build_s": %d, "size_bytes": %s}\n' \
        "$IMAGE" "$BASE" $((t1 - t0)) "$size" >"$STATE/build.json"
}

# ---------------------------------------------------------------------------------------------
# map-test

find_cgroup() {  # the memory cgroup folder of container $1 (cgroup v1 or v2), or nothing
    local id=$1 d
    for d in /sys/fs/cgroup/memory/docker/"$id" /sys/fs/cgroup/docker/"$id" \
             /sys/fs/cgroup/system.slice/docker-"$id".scope; do
        [ -d "$d" ] && { echo "$d"; return; }
    done
    find /sys/fs/cgroup -maxdepth 6 -type d \( -name "$id" -o -name "docker-$id.scope" \) 2>/dev/null | head -1
}

run_case() {  # run_case NAME OUTDIR [docker run options...]: sets RC, LOG, WALL_S, PEAK_MB
    local name=$1 out=$2; shift 2
    LOG="$STATE/test/$name.log"
    local id cg t0 peak=0 v rss=0 r
    t0=$(date +%s.%N)
    id=$(docker run -d --network none "$@" "$IMAGE")
    cg=""
    while [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; do
        [ -n "$cg" ] || cg=$(find_cgroup "$id")
        if [ -n "$cg" ]; then
            v=$(cat "$cg/memory.max_usage_in_bytes" "$cg/memory.peak" 2>/dev/null | head -1 || true)
            [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
            r=$(awk '$1=="total_rss"||$1=="anon"{print $2; exit}' "$cg/memory.stat" 2>/dev/null || true)
            [ -n "$r" ] && [ "$r" -gt "$rss" ] && rss=$r
        fi
        sleep 0.5
    done
    RC=$(docker wait "$id")
    WALL_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
    docker logs "$id" >"$LOG" 2>&1
    docker rm "$id" >/dev/null
    PEAK_MB=$((peak / 1048576))
    RSS_MB=$((rss / 1048576))
    say "case $name: exit $RC in ${WALL_S} s (container memory peak ${PEAK_MB} MiB, rss peak ${RSS_MB} MiB)"
}

expect_clean_failure() {  # expect_clean_failure NAME: non-zero exit, one-line reason, no traceback
    local name=$1 last
    [ "$RC" != 0 ] || { FAILED+=("$name: exit 0, expected a failure"); return; }
    if grep -q Traceback "$LOG"; then FAILED+=("$name: a traceback in $LOG"); return; fi
    last=$(grep -E '^osteoscreen: ' "$LOG" | tail -1 || true)
    [ -n "$last" ] || { FAILED+=("$name: no 'osteoscreen: ...' message in $LOG"); return; }
    say "  -> $last"
}

cmd_test() {
    command -v dciodvfy >/dev/null || apt_install dicom3tools dcmtk
    need_engine
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE not found: run \`make map\` first"
    local venv=${MAP_VENV:-.venv} t study
    rm -rf "$STATE/test"
    mkdir -p "$STATE/test"
    study="$STATE/test/study"
    say "generating the demo study (osteoscreen example ${MAP_STUDY_ARGS:-})"
    # shellcheck disable=SC2086
    nice -n "$NICE" "$venv/bin/osteoscreen" example --out "$study" ${MAP_STUDY_ARGS:-} >/dev/null
    FAILED=()

    # 1. the demo study
    t="$STATE/test/out"
    mkdir -p "$t" && chmod 0777 "$t"  # the container runs as uid 1000
    run_case demo "$t" -v "$study/dicom:/var/holoscan/input:ro" -v "$t:/var/holoscan/output"
    local demo_rc=$RC demo_s=$WALL_S demo_peak=$PEAK_MB demo_rss=$RSS_MB f
    [ "$demo_rc" = 0 ] || FAILED+=("demo: exit $demo_rc (see $LOG)")
    for f in sr.dcm seg.dcm summary.json; do
        [ -s "$t/$f" ] || FAILED+=("demo: $f not written")
    done
    if [ -s "$t/sr.dcm" ]; then
        dciodvfy "$t/sr.dcm" >"$STATE/test/dciodvfy_sr.txt" 2>&1 || true
        if grep -q '^Error' "$STATE/test/dciodvfy_sr.txt"; then
            FAILED+=("demo: dciodvfy reports errors in sr.dcm ($STATE/test/dciodvfy_sr.txt)")
        else
            say "  -> sr.dcm: dciodvfy reports no errors"
        fi
    fi

    # 2. no input (the image's empty /var/holoscan/input)
    t="$STATE/test/out_noinput"
    mkdir -p "$t" && chmod 0777 "$t"
    run_case no_input "$t" -v "$t:/var/holoscan/output"
    expect_clean_failure no_input

    # 3. non-CT objects only: the SR and SEG just written, and a text file
    local nonct="$STATE/test/nonct"
    mkdir -p "$nonct"
    cp "$STATE/test/out/sr.dcm" "$STATE/test/out/seg.dcm" "$nonct/" 2>/dev/null || true
    echo "not DICOM" >"$nonct/readme.txt"
    chmod -R a+rX "$nonct"  # readable by the container's user, so that they are judged, not skipped
    t="$STATE/test/out_nonct"
    mkdir -p "$t" && chmod 0777 "$t"
    run_case non_ct "$t" -v "$nonct:/var/holoscan/input:ro" -v "$t:/var/holoscan/output"
    expect_clean_failure non_ct
    [ "$RC" = 3 ] || FAILED+=("non_ct: exit $RC, expected 3 (not screenable)")
    grep -q '"not_screenable"' "$t/summary.json" 2>/dev/null || FAILED+=("non_ct: summary.json without status not_screenable")

    # 4. a read-only output folder
    t="$STATE/test/out_readonly"
    mkdir -p "$t" && chmod 0777 "$t"
    run_case read_only_output "$t" -v "$study/dicom:/var/holoscan/input:ro" -v "$t:/var/holoscan/output:ro"
    expect_clean_failure read_only_output

    printf '{"image": "%s", "demo_exit": %s, "demo_run_s": %s, "demo_memory_peak_mib": %s, "demo_rss_peak_mib": %s}\n' \
        "$IMAGE" "$demo_rc" "$demo_s" "$demo_peak" "$demo_rss" >"$STATE/test/result.json"
    if [ ${#FAILED[@]} -gt 0 ]; then
        printf 'map-test: FAILED: %s\n' "${FAILED[@]}" >&2
        exit 1
    fi
    say "map-test passed: demo study screened in ${demo_s} s, container memory peak ${demo_peak} MiB" \
        "(rss ${demo_rss} MiB); outputs in $STATE/test/out"
}

case "${1:-}" in
    build) cmd_build ;;
    test) cmd_test ;;
    *) echo "usage: deploy/map.sh build|test" >&2; exit 2 ;;
esac
