import sys

from factq.cli import main

sys.exit(main())
