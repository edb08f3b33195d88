"""The ``ansible_playbook`` job type: ``job`` runs a playbook through ansible-runner,
``events`` turns each runner event into records and progress, ``digest`` sums up a failure."""
