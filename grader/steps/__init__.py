"""Step types: the harness's actions as the submission's peer, registered in :mod:`grader.steps.registry`."""
