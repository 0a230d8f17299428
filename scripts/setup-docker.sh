#!/usr/bin/env bash
# The container side of the setup (scripts/setup.sh calls it; GRADER_SETUP_DOCKER=0 skips it): install docker.io,
# debootstrap and bubblewrap with apt-get when missing, start dockerd when no engine answers (no systemd needed),
# then build the grader's images with scripts/build-image (reused when up to date, so a rerun takes a second).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
ENGINE_DEADLINE_S=${ENGINE_DEADLINE_S:-90}

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

pkgs=()
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || engine_answers || pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || pkgs+=(bubblewrap)
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "setup: installing ${pkgs[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${pkgs[@]}" >/dev/null
fi

# Start dockerd in the background, its log in $DOCKERD_LOG, and wait (with a deadline) until `docker info` answers.
# Returns 1 when it exits or does not answer in time.
start_dockerd() {
    echo "setup: starting dockerd $* (log: $DOCKERD_LOG)" >&2
    setsid dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$! deadline=$((SECONDS + ENGINE_DEADLINE_S))
    while [ $SECONDS -lt $deadline ]; do
        engine_answers && return 0
        kill -0 "$pid" 2>/dev/null || { echo "setup: dockerd $* exited; the end of its log:" >&2; tail -n 15 "$DOCKERD_LOG" >&2; return 1; }
        sleep 0.5  # polling the engine's socket, bounded by the deadline
    done
    echo "setup: dockerd $* did not answer within ${ENGINE_DEADLINE_S} s; the end of its log:" >&2
    tail -n 15 "$DOCKERD_LOG" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

if ! engine_answers; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start it as root" \
            "(sudo systemctl start docker, or sudo dockerd >$DOCKERD_LOG 2>&1 &) and join the docker group" >&2
        exit 1
    elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl start docker
        engine_answers || { echo "setup: systemctl start docker did not bring up an engine (journalctl -u docker)" >&2; exit 1; }
    else
        # No systemd (a container or a CI machine): run dockerd directly. Where the kernel has no iptables
        # (nested VMs), a second try without bridge networking still serves the --network none containers used here.
        start_dockerd || start_dockerd --iptables=false --bridge=none || {
            echo "setup: cannot start dockerd (see $DOCKERD_LOG)" >&2; exit 1; }
    fi
fi
echo "setup: Docker engine $(docker info --format '{{.ServerVersion}}, storage driver {{.Driver}}')" >&2

started=$SECONDS
$SUDO bash scripts/build-image
echo "setup: images ready in $((SECONDS - started)) s" >&2
