"""``python -m benchmarks.trees [options]``: see the package docstring."""

from benchmarks.trees.run import main

if __name__ == "__main__":
    main()
