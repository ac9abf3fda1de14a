"""``python -m optax_signvar.demo``: runs :mod:`optax_signvar.demo.compare`."""

from optax_signvar.demo.compare import main

if __name__ == "__main__":
    main()
