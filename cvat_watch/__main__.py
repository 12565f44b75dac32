from cvat_watch.cli import main

raise SystemExit(main())
