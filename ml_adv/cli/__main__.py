"""``python -m ml_adv.cli``: the ``ml-adv`` console script."""

import sys

from ml_adv.cli.main import main

sys.exit(main())
