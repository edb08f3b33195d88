"""jobtrail.jobtypes."""
