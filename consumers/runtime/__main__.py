"""`python -m consumers.runtime [worker options]`: the same as `streamrisk worker ...`."""

import sys

from consumers.cli.app import main

sys.exit(main(["worker", *sys.argv[1:]]))
