"""`python -m bench`: the SPEC section 7 benchmark (product vs a trivial FastAPI baseline).

See bench/README.md for what is measured and how to read the numbers.
"""


class BenchError(Exception):
    """The harness could not produce trustworthy numbers (exit 2): a tool, a server, an answer."""
