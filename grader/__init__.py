"""Socket-lab grader: drives student socket programs over real sockets and judges them against YAML specs."""

__version__ = "0.1.0"
