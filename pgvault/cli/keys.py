"""`pgvault keys generate` (age) and `pgvault keys rotate-hmac` (message key)."""

from __future__ import annotations

from pathlib import Path

import typer

from pgvault.cli.output import emit_json

app = typer.Typer(
    no_args_is_help=True,
    help="Client-side encryption keys (age) and the message authentication key (HMAC).",
)


def _cluster(ctx: typer.Context) -> str | None:
    """The configured cluster, or None: generating a key needs no configuration."""
    from pgvault.cli import state
    from pgvault.errors import PgvaultError

    try:
        return state(ctx).settings.cluster
    except PgvaultError:
        return None


@app.command("generate")
def generate_cmd(
    ctx: typer.Context,
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
        emit_json(
            {
                "cluster": _cluster(ctx),
                "ok": True,
                "identity_file": str(output.resolve()),
                "recipient": recipient,
            }
        )
        return
    typer.echo(recipient)
    typer.echo(
        f"identity written to {output} (mode 0600); add the line above to [encryption] recipients",
        err=True,
    )


@app.command("rotate-hmac")
def rotate_hmac_cmd(
    ctx: typer.Context,
    grace_hours: float = typer.Option(
        24.0,
        "--grace-hours",
        min=0,
        help="How long messages signed with the previous key are still accepted.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print {key_file, current, accepted}."),
) -> None:
    """Rotate the cluster's message key (`[broker] hmac_key_file`, mode 0600).

    A new key signs from now on; the previous one keeps verifying for --grace-hours so
    messages already queued are not refused. Running stages pick up the change without a
    restart. Copy the file to every host that runs pgvault stages of this cluster.
    """
    from datetime import timedelta

    from pgvault.broker.auth import rotate_key_file
    from pgvault.cli import state

    settings = state(ctx).settings
    path = settings.hmac_key_path
    ring = rotate_key_file(path, settings.cluster, timedelta(hours=grace_hours))
    if json_out:
        emit_json(
            {
                "cluster": settings.cluster,
                "ok": True,
                "key_file": str(path),
                "current": ring.current.id,
                "accepted": [k.id for k in ring.keys],
            }
        )
        return
    typer.echo(f"{path}: new key {ring.current.id} signs from now on")
    for key in ring.keys[1:]:
        until = key.expires.strftime("%Y-%m-%dT%H:%M:%SZ") if key.expires else "-"
        typer.echo(f"  previous key {key.id} still accepted until {until}")
