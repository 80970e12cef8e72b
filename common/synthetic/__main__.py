"""`python -m common.synthetic --out DIR --train N --valid M ...` (see common.synthetic.cli)."""

from common.synthetic.cli import main

main()
