"""The `podnet` command: a typer app with one module per command group.

Exit codes: 0 ok, 1 invalid input or usage, 2 store unreachable. Errors go to stderr, one line per problem.
"""

from __future__ import annotations

import sys

import typer

from podnet.cli import apiserver, demo, dns, lab, overlay, proxy, resources, trace
from podnet.cli.context import CliState

app = typer.Typer(
    name="podnet",
    help="Kubernetes-style cluster networking on the real Linux kernel: services, overlay, CNI, lab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    store: str = typer.Option(
        None, "--store", envvar="PODNET_STORE", help="Store URL: sqlite:///PATH (default) or etcd://HOST:PORT[,...]"
    ),
    etcd_cafile: str = typer.Option(None, "--etcd-cafile", help="etcd: CA certificate file"),
    etcd_certfile: str = typer.Option(None, "--etcd-certfile", help="etcd: client certificate file"),
    etcd_keyfile: str = typer.Option(None, "--etcd-keyfile", help="etcd: client key file"),
    etcd_username: str = typer.Option(None, "--etcd-username", envvar="PODNET_ETCD_USERNAME"),
    etcd_password: str = typer.Option(None, "--etcd-password", envvar="PODNET_ETCD_PASSWORD"),
) -> None:
    ctx.obj = CliState(
        store_url=store,
        etcd_options={
            k: v
            for k, v in {
                "cafile": etcd_cafile,
                "certfile": etcd_certfile,
                "keyfile": etcd_keyfile,
                "username": etcd_username,
                "password": etcd_password,
            }.items()
            if v
        },
    )


resources.register(app)
apiserver.register(app)
demo.register(app)
trace.register(app)
app.add_typer(proxy.app, name="proxy")
app.add_typer(overlay.app, name="overlay")
app.add_typer(lab.app, name="lab")
app.add_typer(dns.app, name="dns")


def main() -> None:
    from podnet.errors import PodnetError, ValidationError
    from podnet.store import StoreError, StoreUnavailable
    from podnet.store.base import ValueTooLarge

    try:
        # Without standalone mode click returns (instead of raising) the code of a typer.Exit.
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            sys.exit(rv)
    except StoreUnavailable as e:
        print(f"error: store unreachable: {e}", file=sys.stderr)
        sys.exit(2)
    except PodnetError as e:
        if isinstance(e, StoreError) and not isinstance(e, ValidationError | ValueTooLarge):
            # a bad store URL or option, refused credentials: the user's input
            print(f"error: store: {e}", file=sys.stderr)
            sys.exit(1)
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        # Usage errors, Exit and Abort come from the click that typer uses (its own vendored copy in recent
        # releases, the click package in older ones), so they are recognised by shape, not by class.
        name = type(e).__name__
        if name == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        if name == "Abort":
            sys.exit(1)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(1)  # usage errors are exit 1 (click's default is 2, which we reserve for the store)
        raise


if __name__ == "__main__":
    main()
