"""``python -m foundation_cli`` runs the CLI (used on nodes where no console script is on PATH)."""

from foundation_cli.commands.app import main

if __name__ == "__main__":
    main()
