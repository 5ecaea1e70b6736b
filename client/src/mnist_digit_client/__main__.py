"""`python -m mnist_digit_client`: the same command line as `mnist-digit`."""

import sys

from mnist_digit_client.cli import main

sys.exit(main())
