from backupd.cli import main

raise SystemExit(main())
