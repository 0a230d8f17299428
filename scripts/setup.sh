#!/usr/bin/env bash
# Set up everything the grader and its tests need on a fresh Debian machine: system tools, a venv, the package.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# tcpdump captures a failed check's traffic (grader check --pcap); tshark reads the capture back in the tests.
for tool in gcc make socat curl tcpdump tshark bwrap prlimit setpriv; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# real event-driven HTTP servers graded by tests/test_real_programs.py (in /usr/sbin, off a user's PATH)
for tool in nginx lighttpd; do [ -x "/usr/sbin/$tool" ] || need+=("$tool"); done
# the class report's browser test (Debian's Chromium and its chromedriver; no browser is ever downloaded) and
# the Celery executor's tests (a redis-server each test starts on a port of its own)
for tool in chromium chromedriver redis-server; do [ -x "/usr/bin/$tool" ] || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    pkgs=()
    for t in "${need[@]}"; do
        case "$t" in
            gcc) pkgs+=(gcc libc6-dev);;
            bwrap) pkgs+=(bubblewrap);;
            prlimit|setpriv) pkgs+=(util-linux);;
            chromedriver) pkgs+=(chromium-driver);;
            *) pkgs+=("$t");;
        esac
    done
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${pkgs[*]} with apt-get" >&2
    # tshark's wireshark-common asks whether non-root users may capture: answer no, without asking
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Docker, debootstrap, bubblewrap and the grader's images (GRADER_SETUP_DOCKER=0 skips this).
[ "${GRADER_SETUP_DOCKER:-1}" = 0 ] || bash scripts/setup-docker.sh
echo "setup: ready (.venv/bin/grader)" >&2
