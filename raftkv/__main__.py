"""``python -m raftkv``: the ``raftkv`` command."""

from raftkv.cli import main

if __name__ == "__main__":
    main(prog_name="raftkv")
