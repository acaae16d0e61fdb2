"""`pgvault keys generate`."""

from __future__ import annotations

from pathlib import Path

import typer

from pgvault.cli.output import emit_json

app = typer.Typer(no_args_is_help=True, help="Client-side encryption keys (age).")


@app.command("generate")
def generate_cmd(
    output: Path = typer.Option(
        Path("pgvault-identity.txt"),
        "--output",
        "-o",
        help="Where to write the identity (private key), mode 0600.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    json_out: bool = typer.Option(False, "--json", help="Print {identity_file, recipient}."),
) -> None:
    """Create an age identity and print its recipient (public key).

    Put the recipient into `[encryption] recipients` on the production host; keep the
    identity file only where restores, drills and content verification run (and a copy
    offline). `age -d -i FILE object` decrypts any pgvault object with it.
    """
    from pgvault.keys import generate

    recipient = generate(output, force=force)
    if json_out:
        emit_json({"identity_file": str(output.resolve()), "recipient": recipient})
        return
    typer.echo(recipient)
    typer.echo(
        f"identity written to {output} (mode 0600); add the line above to [encryption] recipients",
        err=True,
    )
