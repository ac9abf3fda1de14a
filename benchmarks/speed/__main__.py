"""``python -m benchmarks.speed [options]``: see the package docstring."""

from benchmarks.speed.run import main

if __name__ == "__main__":
    main()
