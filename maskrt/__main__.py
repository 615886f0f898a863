from maskrt.runtime.cli import main

raise SystemExit(main())
