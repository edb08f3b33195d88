"""A package of job code for tests/jobs_fixture.py's ``root_cause``: a failure's frame is
shown as the module's path under its import root (``jobpkg/inventory.py``)."""
