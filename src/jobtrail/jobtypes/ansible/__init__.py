"""jobtrail.jobtypes.ansible."""
