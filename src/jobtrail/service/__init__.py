"""jobtrail.service."""
