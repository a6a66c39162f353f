"""Allow `python -m susl_cli`."""

from susl_cli.cli import main

if __name__ == "__main__":
    main()
