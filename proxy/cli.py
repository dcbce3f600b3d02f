"""`strangler`: a thin argparse front end; each subcommand's module is imported only when it runs.

A subcommand whose module is missing (a feature not installed or not built yet) prints a clear
"not available" message and exits 2 instead of breaking the whole CLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy.ops.settings import SettingsError, add_proxy_arguments, settings_from

# subcommand -> (module, function, help); the function takes the remaining argv and returns an exit code.
DELEGATED: dict[str, tuple[str, str, str]] = {
    "migrate": ("proxy.shadow.migrate_cli", "main", "apply an app's migrations (--gateway: the gateway's)"),
    "report": ("proxy.report.cli", "main", "print the shadow-comparison report"),
    "rollout": ("proxy.autopilot.cli", "main", "autopilot: status, pause, resume, promote, rollback"),
    "run": ("proxy.devstack.stack", "main", "run the whole system locally: databases, both apps, gateway"),
}


def _load(module: str, function: str, command: str) -> Callable[..., Any] | None:
    """Import ``module.function`` or explain on stderr why ``command`` is not available."""
    try:
        found: Callable[..., Any] = getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # the module is there but a dependency of it is missing: show the real error
        print(
            f"strangler {command}: not available: module {module} is not installed in this build. "
            "Install the full package (make install) or pick another command (strangler --help).",
            file=sys.stderr,
        )
        return None
    except AttributeError:
        print(f"strangler {command}: not available: {module} has no {function}().", file=sys.stderr)
        return None
    return found


def build_parser() -> argparse.ArgumentParser:
    """The full `strangler` parser (subcommands: proxy, routes check, migrate, report, run, version)."""
    parser = argparse.ArgumentParser(
        prog="strangler",
        description="Migrate a Node.js backend to Python one endpoint at a time, behind a gateway.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    proxy = sub.add_parser("proxy", help="run the gateway", description="Run the gateway.")
    add_proxy_arguments(proxy)
    routes = sub.add_parser("routes", help="routes file tools (routes check FILE, routes discover)")
    routes_sub = routes.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    check = routes_sub.add_parser("check", help="validate a routes file and print the resolved table")
    check.add_argument("file", help="the routes.yaml to check")
    _add_discover(routes_sub)
    sub.add_parser("version", help="print the version and whether the data path is compiled")
    for name, (_, _, help_text) in DELEGATED.items():
        delegated = sub.add_parser(name, help=help_text, add_help=False)
        delegated.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _add_discover(routes_sub: Any) -> None:
    discover = routes_sub.add_parser(
        "discover",
        help="write a routes.yaml draft (every route on legacy) from an Express app and/or access logs",
        description="Write a routes.yaml draft, every route on legacy, from an Express app (loaded in Node, "
        "nothing served) and/or access logs (the gateway's JSON log or nginx/Apache combined format).",
    )
    discover.add_argument("--express", metavar="APP_JS", help="the module that creates the Express app")
    discover.add_argument(
        "--access-log", metavar="FILE", action="append", default=[], help="an access log (repeatable)"
    )
    discover.add_argument("--out", metavar="FILE", help="write the draft here (default: standard output)")
    discover.add_argument("--legacy-url", default="http://127.0.0.1:3000", help="the draft's legacy upstream")
    discover.add_argument("--new-url", default="http://127.0.0.1:8000", help="the draft's new upstream")
    discover.add_argument("--timeout", type=float, default=30.0, help="seconds allowed to load the app")
    discover.add_argument("--node", help="the node binary (default: node on PATH)")
    discover.add_argument(
        "--max-literals",
        type=int,
        default=20,
        help="distinct names after one path prefix beyond which the log's segments count as values",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from proxy.compiled import BUILD

    try:
        number = version("strangler")
    except PackageNotFoundError:  # run from a checkout that was never installed
        number = "(not installed)"
    return f"strangler {number}\ncompiled data path: {BUILD.describe()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `strangler` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Delegated commands parse their own flags (including --help), so hand them the raw rest of argv.
    if args_list and args_list[0] in DELEGATED:
        module, function, _ = DELEGATED[args_list[0]]
        run = _load(module, function, args_list[0])
        return 2 if run is None else int(run(args_list[1:]) or 0)
    args = build_parser().parse_args(args_list)
    if args.command == "version":
        print(_version())
        return 0
    if args.command == "routes" and args.routes_command == "discover":
        discover_fn = _load("proxy.routing.cli", "discover", "routes discover")
        return 2 if discover_fn is None else int(discover_fn(args, sys.stdout, sys.stderr))
    if args.command == "routes":
        check_fn = _load("proxy.routing.cli", "check", "routes check")
        return 2 if check_fn is None else int(check_fn(args.file, sys.stdout))
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"strangler proxy: {exc}", file=sys.stderr)
        return 2
    from proxy.ops.app import run_proxy  # imported late: it pulls in the event loop and the data path

    return run_proxy(settings)


if __name__ == "__main__":  # pragma: no cover - `python -m proxy.cli`
    sys.exit(main())
