import sys

from faxbridge.cli import main

sys.exit(main())
