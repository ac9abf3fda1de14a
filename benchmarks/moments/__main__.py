"""``python -m benchmarks.moments [options]``: see the package docstring."""

from benchmarks.moments.run import main

if __name__ == "__main__":
    main()
