import sys

from serveprof.cli import main

sys.exit(main())
