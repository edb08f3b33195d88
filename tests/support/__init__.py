"""Helpers the tests share that are not fixtures: what a test needs from the machine
(``requirements``) and the coverage data step of ``tox -e …-cov`` (``coverage_data``)."""
