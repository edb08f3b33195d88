"""jobtrail.backends.local."""
