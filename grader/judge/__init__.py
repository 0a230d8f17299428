"""Pure judging layer: bytes in, verdicts out, no I/O.

* :mod:`grader.judge.show` -- presenting bytes to students (escaping, hexdumps, first difference).
* :mod:`grader.judge.http` -- parsing HTTP/1.x requests and responses with h11, with readable reasons.
* :mod:`grader.judge.numbers` -- judging binary unsigned integers (network byte order).
* :mod:`grader.judge.expr` -- a tiny safe arithmetic evaluator for spec authors.
"""
