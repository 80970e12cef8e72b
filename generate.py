#!/usr/bin/env python
"""Render frames from poses with a trained generator, or write pose-augmented data sets:
`python generate.py dataset --help`, `python generate.py poses --help` (gan/generation/)."""

if __name__ == "__main__":
    import sys

    from gan.generation.commands import main

    sys.exit(main())
