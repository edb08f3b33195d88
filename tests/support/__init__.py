"""Helpers the tests share that are not fixtures, imported as ``support.<module>``:

* ``live``: a real server on a free loopback port (``Live``, ``live_server``,
  ``server_config``, ``free_port``);
* ``waits``: ``wait_until`` with a deadline, ``pid_gone``, ``epoch``;
* ``redis_server``: a real redis-server and real ``jobtrail worker`` processes;
* ``proxy``: a TCP proxy whose connections a test can cut;
* ``requirements``: what a test needs from the machine, and how to install it;
* ``coverage_data``: the coverage data step of ``tox -e …-cov``.
* ``parallel``: how the suite runs in parallel (pytest-xdist): a plugin ``conftest`` imports.
"""
