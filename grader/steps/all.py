"""Import every step module so that all step types are registered."""

from grader.steps import flow, http, peer, process, tcp, udp

MODULES = (flow, http, peer, process, tcp, udp)
