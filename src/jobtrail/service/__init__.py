"""The service layer: ``JobService``, the one facade over the jobs and their logs.

``config`` (``ServerConfig``), ``home`` (the locked private directory), ``ports`` (the
protocols a backend implements), ``retention``. ``jobtrail.backends.open_service(config)``
builds a ``JobService`` with the backend the config names.
"""

from jobtrail.service.config import ServerConfig
from jobtrail.service.home import HomeInUse, home_mark
from jobtrail.service.ports import SERVER_STOPPED
from jobtrail.service.service import JobService, Playbooks

__all__ = ["SERVER_STOPPED", "HomeInUse", "JobService", "Playbooks", "ServerConfig", "home_mark"]
