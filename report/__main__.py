"""`python -m report RUN [--compare DIR ...] [--sample N] [--map_sample N] [--seed S] [--output FILE]`"""
import sys

from .page import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
