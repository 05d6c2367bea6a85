import sys

from career_relay.cli import main

sys.exit(main())
