# The grader's image: Python, gcc, make, socat, curl, and the grader package with its labs (specs, reference
# programs, fixtures), for grading in a container where every connection stays on the container's loopback:
#   docker build -t socket-lab-grader:0.1.0 .
#   docker run --rm --network none -v "$PWD/alice:/sub:ro" -v "$PWD/out:/out" socket-lab-grader:0.1.0 \
#       check http-server /sub --junit /out/alice.xml --json /out/alice.json
#
# BASE is any Debian-based image with python3 (3.11+) and its venv module; the default is the public Python
# image. Where no registry is reachable, `scripts/build-image` makes a base with debootstrap (which already has
# every Debian package below, so no apt-get runs) and builds with `--network none` from a wheelhouse:
#   - wheelhouse/ holding wheels (the pinned dependencies, setuptools and wheel): pip installs with --no-index;
#     with no wheels there (a fresh checkout), pip uses its index as usual;
#   - APT=auto installs only what the base lacks; APT=never makes a base that lacks something an error.
# Each tool's Debian package has its name. The build works with the classic builder and BuildKit alike.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG APT=auto
RUN set -eu; missing=""; \
    for tool in gcc make socat curl; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done; \
    [ -f /usr/include/stdio.h ] || missing="$missing libc6-dev"; \
    python3 -c "import venv, ensurepip" 2>/dev/null || missing="$missing python3-venv"; \
    if [ -z "$missing" ]; then \
        echo "the base has gcc, libc6-dev, make, socat, curl and python3-venv: no apt-get"; \
    elif [ "$APT" = never ]; then \
        echo "the base image lacks:$missing (APT=never forbids apt-get): build the base with scripts/build-image" >&2; \
        exit 1; \
    else \
        echo "installing with apt-get:$missing"; \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# The submission user: the docker backend runs submissions as this unprivileged user (never as root). It owns no
# file of the image, so it cannot change the grader, its specs or its reference programs.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /bin/sh student

# The dependencies first (their layer is reused while pyproject.toml and the wheelhouse stay the same).
COPY wheelhouse/ /opt/wheelhouse/
COPY pyproject.toml /opt/src/
RUN set -eu; cd /opt/src; \
    python3 -c "import tomllib; print(chr(10).join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /opt/requirements.txt; \
    offline=""; if ls /opt/wheelhouse/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /opt/wheelhouse"; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check $offline -r /opt/requirements.txt

COPY README.md /opt/src/
COPY grader /opt/src/grader
# The shortio preload library is compiled now, into a cache folder the harness finds through XDG_CACHE_HOME, so
# nothing is compiled (or written) at grading time, also with a read-only root file system.
ENV XDG_CACHE_HOME=/opt/grader-cache
RUN set -eu; \
    offline=""; if ls /opt/wheelhouse/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /opt/wheelhouse"; fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps $offline /opt/src; \
    rm -rf /opt/src /opt/wheelhouse /opt/requirements.txt; \
    /opt/venv/bin/python -c "from grader.driver.preload import build_preload; print(build_preload())"; \
    chmod -R go-w /opt/grader-cache; \
    chmod 0700 /opt/venv; \
    /opt/venv/bin/grader list

ENV PATH=/opt/venv/bin:$PATH LANG=C.UTF-8
# /opt/venv is root's alone (0700): the grader, and the specs with their hidden checks inside its package, are
# out of reach of the submission, which the docker backend runs as a user of its own (with the system's python3).
# dockerenv.LABEL_USER: the docker backend reads the user to run submissions as
LABEL org.socket-lab-grader.submission-user="student:10001"
WORKDIR /
ENTRYPOINT ["grader"]
CMD ["list"]
