# The grader in a container, for grading a class in parallel:
#   docker build -t socket-lab-grader .
#   docker run --rm -v "$PWD/submissions/alice:/sub:ro" -v "$PWD/out:/out" socket-lab-grader \
#       check http-server /sub --junit /out/alice.xml --json /out/alice.json
# The base is a build argument so that a site with its own registry or a locally made image can use it:
#   docker build --build-arg BASE=my-registry/python:3.11-slim-bookworm -t socket-lab-grader .
# Any Debian-based image with python3 and python3-venv works as the base (it was built here from a
# debootstrapped bookworm with those two packages, imported with `docker import`).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev make socat curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/grader
COPY pyproject.toml README.md ./
COPY grader ./grader
# A virtual environment works on any base: the official python image and a Debian python3 alike.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -e . \
    && /opt/venv/bin/python -c "from grader.driver.preload import build_preload; print(build_preload())"

ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["grader"]
CMD ["list"]
