from facetracker.cli import main

raise SystemExit(main())
