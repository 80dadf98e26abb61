import sys

from tfrec.cli import main

sys.exit(main())
