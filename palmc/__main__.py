"""``python -m palmc`` runs the command-line interface."""

from palmc.cli import app

app(prog_name="palmc")
