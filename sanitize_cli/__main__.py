import sys

from sanitize_cli.main import main

sys.exit(main())
