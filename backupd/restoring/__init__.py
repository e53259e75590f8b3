"""What restoring a database backup shares with verifying one: finding the backup
(``source``) and building a database from it (``builder``). Below the verbs, so
``restore`` and ``verify`` are peers that both use it."""
