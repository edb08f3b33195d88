"""jobtrail.backends."""
