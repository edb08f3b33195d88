"""The job types jobtrail ships: ``builtin`` (``sleep``, ``demo``) and ``ansible``
(``ansible_playbook``). Each module registers its types with ``@job`` when imported."""
