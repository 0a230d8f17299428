"""Reports of a grading run: the result model, JUnit XML, JSON, and the terminal summary."""
