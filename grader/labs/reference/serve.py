#!/usr/bin/env python3
"""Start all the reference servers at once, for trying out your clients: the same as `grader serve`.

Usage:
  python3 grader/labs/reference/serve.py [--host 127.0.0.1] [--docroot DIR] [--port-base N]
                                         [--http-port N] [--echo-port N] [--udp-port N] [--time-port N]

Starts the HTTP server (with sample-docroot/ as its document root), the TCP and UDP echo servers and the RFC 868
time server (TCP and UDP), prints one line per service once it is listening, and runs until Ctrl-C, SIGTERM or
SIGHUP. Port 0 (the default) lets each server pick a free port. Needs nothing but python3: the code is in the
grader package that holds this folder (grader/serve.py).
"""

import os
import sys

# This file is grader/labs/reference/serve.py: the folder holding the grader package is three levels up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from grader.serve import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
