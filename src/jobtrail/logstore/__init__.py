"""jobtrail.logstore."""
