"""Point-in-time recovery: a WAL stream received through a physical replication slot,
base backups of the whole cluster, and data directories rebuilt from both.

Layout, under ``BACKUP_DIR/_pitr/<system identifier>/``:

- ``base/<id>.tar.zst[.age]``, its manifest ``<id>.json`` and the server's
  ``<id>.backup_manifest``;
- ``wal/<segment>.zst[.age]`` and ``wal/<timeline>.history.zst[.age]``: completed
  files only, each written under a temporary name, fsynced and renamed;
- ``.receiving/``: ``pg_receivewal``'s own folder, holding the segment being received
  (``.partial``, fsynced on every write) and the newest completed one, from which a
  restarted receiver resumes;
- ``gaps.json``: where the stream broke (a lost slot), so no window ever spans one;
- ``verify.json``: the last drill;
- ``.last-failure-<job>.json``: the cluster's failed base backup, drill or stream (one that
  failed before the server said which cluster it is: in ``_pitr/`` itself).

Each ``<system identifier>`` folder is one cluster, and every decision is about one cluster
alone (``clusters`` says which: the one named, the connected server's, or the only one).
"""
