"""The command line: ``python -m mechat serve | chat | conform | load``.

This module only parses arguments and wires the pieces together; every
behaviour lives in the module it names.
"""

import argparse
import logging
import os
import signal
import sqlite3
import ssl
import sys
import threading
from types import FrameType
from typing import Callable, List, Optional, TextIO, Tuple

from mechat import __version__, accounts, conform, protocol, tls, tuning
from mechat.server import ChatServer, Limits


def port_number(text: str) -> int:
    """Parse a TCP port, 0 to 65535, for argparse."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is 0 to 65535, not %d" % port)
    return port


def at_least(minimum: float, kind: Callable[[str], float]) -> Callable[[str], float]:
    """Make an argparse type that refuses numbers below ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if value < minimum:
            raise argparse.ArgumentTypeError("must be at least %g, not %s" % (minimum, text))
        return value

    parse.__name__ = kind.__name__
    return parse


#: A numeric flag: flag, type, default, metavar, meaning (see add_flags).
Flag = Tuple[str, Callable[[str], float], float, str, str]

#: The serve flags for the limits of spec §9: flag, type, default, metavar, meaning.
LIMIT_FLAGS: List[Flag] = [
    ("--max-clients", at_least(1, int), protocol.DEFAULT_MAX_CLIENTS, "N", "connections served at once"),
    (
        "--nick-timeout",
        at_least(0.1, float),
        protocol.DEFAULT_NICKNAME_TIMEOUT,
        "SECONDS",
        "time a new client has to choose a nickname",
    ),
    (
        "--send-timeout",
        at_least(0.1, float),
        protocol.DEFAULT_SEND_TIMEOUT,
        "SECONDS",
        "time a write may block before a client that does not read is dropped",
    ),
    (
        "--max-rate",
        at_least(0, float),
        protocol.DEFAULT_MAX_RATE,
        "LINES_PER_SECOND",
        "lines a second one client may send; 0 turns flood control off",
    ),
    (
        "--send-queue",
        at_least(4096, int),
        protocol.DEFAULT_SEND_QUEUE,
        "BYTES",
        "octets a client may fall behind in reading before it is dropped",
    ),
    (
        "--all-rate",
        at_least(0, float),
        protocol.DEFAULT_ALL_RATE,
        "PER_SECOND",
        "/all lines a second one client may send; 0 turns the limit off",
    ),
    (
        "--max-rooms",
        at_least(0, int),
        protocol.DEFAULT_MAX_ROOMS,
        "N",
        "rooms the server keeps; they last until it stops",
    ),
    ("--max-members", at_least(1, int), protocol.DEFAULT_MAX_MEMBERS, "N", "members one room may have"),
    (
        "--mailbox-size",
        at_least(0, int),
        protocol.DEFAULT_MAILBOX_SIZE,
        "N",
        "messages kept for one account while it is away; 0 keeps none",
    ),
]


#: The load flags that take a number: flag, type, default, metavar, meaning.
LOAD_FLAGS: List[Flag] = [
    ("--pairs", at_least(1, int), 10, "N", "pairs of clients, so 2*N connections"),
    ("--messages", at_least(1, int), 1000, "M", "round trips per pair, or lines per client in a flood"),
    ("--size", at_least(28, int), 64, "B", "octets per line, LF not counted, 28 to 2000"),
    (
        "--window",
        at_least(1, int),
        128,
        "W",
        "flood: lines a client may have sent that its partner has not read",
    ),
    ("--timeout", at_least(0.1, float), 60.0, "SECONDS", "give up after this long"),
]


def add_flags(parser: argparse.ArgumentParser, flags: List[Flag]) -> None:
    """Add each (flag, type, default, metavar, meaning) of a table, its default shown in the help."""
    for flag, kind, default, metavar, meaning in flags:
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=meaning + " (default: %(default)s)"
        )


def add_address(parser: argparse.ArgumentParser) -> None:
    """Add --host and --port, with the defaults that serve and chat share."""
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument(
        "--port", type=port_number, default=protocol.DEFAULT_PORT, help="TCP port (default: %(default)s)"
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mechat",
        description="A chat server that pairs two strangers, and its terminal client.",
        epilog="Start a server with 'mechat serve', then run 'mechat chat' in two other terminals.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version="mechat %s (protocol %s)" % (__version__, protocol.PROTOCOL_VERSION),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_command(commands)
    add_chat_command(commands)
    add_conform_command(commands)
    add_load_command(commands)
    return parser


def add_serve_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat serve'."""
    serve = commands.add_parser(
        "serve",
        help="run the chat server",
        description="Run the chat server until Ctrl-C or SIGTERM. The limits are those of spec section 9.",
    )
    add_address(serve)
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least important log messages to show (default: %(default)s)",
    )
    add_flags(serve, LIMIT_FLAGS)
    serve.add_argument(
        "--all-cpus",
        action="store_true",
        help="let threads run on every CPU instead of one; one is faster under load,"
        " because only one thread runs Python at a time (see docs/performance)",
    )
    serve.add_argument(
        "--db",
        metavar="PATH",
        help="the SQLite file of accounts and stored messages (default: %s; ':memory:' keeps"
        " nothing)" % accounts.default_path(),
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    serve.set_defaults(run=run_serve, parser=serve)


def add_chat_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat chat'."""
    chat = commands.add_parser(
        "chat",
        help="chat with a stranger",
        description="Connect to a mechat server and chat. End with /quit or Ctrl-D.",
    )
    add_address(chat)
    who = chat.add_mutually_exclusive_group()
    who.add_argument("--nick", metavar="NAME", help="nickname to use (default: ask)")
    who.add_argument(
        "--login",
        metavar="NICK",
        help="log in to the account NICK, and get the messages kept for it; asks for the password",
    )
    who.add_argument(
        "--register",
        metavar="NICK",
        help="make an account called NICK and log in; asks for a password twice",
    )
    chat.add_argument(
        "--insecure",
        action="store_true",
        help="send a password over plain TCP to another machine, where anyone on the way can read it"
        " (without it, a password goes only over --tls or to localhost)",
    )
    chat.add_argument(
        "--no-color",
        dest="color",
        action="store_false",
        help="never colour the output (NO_COLOR in the environment does the same)",
    )
    chat.add_argument("--tls", action="store_true", help="connect over TLS")
    chat.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the authorities in this file (PEM) instead of the system's; implies --tls",
    )
    chat.set_defaults(run=run_chat)


def add_load_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat load'."""
    load = commands.add_parser(
        "load",
        help="measure a chat server with many clients",
        description="Connect pairs of clients to a server, make them talk, and check that every line"
        " arrived exactly once, in order and intact. Exits 1 if anything went wrong, 2 if nothing"
        " listens on the port.",
    )
    add_address(load)
    add_flags(load, LOAD_FLAGS)
    load.add_argument(
        "--mode",
        choices=["pingpong", "flood"],
        default="pingpong",
        help="one line in flight per pair, or everyone sends at once (default: %(default)s)",
    )
    add_tls_client(
        load, "every client connects over TLS, one handshake after another before it sends its nickname"
    )
    load.set_defaults(run=run_load)


def add_conform_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat conform'."""
    kit = commands.add_parser(
        "conform",
        help="grade a running server against the spec",
        description="Connect to a running server, any implementation, as an ordinary client and check it"
        " against spec/protocol.md clause by clause. A preflight tries the basics first (connect, hang up,"
        " a nickname and #wait, a pair, lines each way); if one fails, the report says why in one paragraph"
        " and skips the checks that need it. Then each check prints PASS, FAIL or SKIP, with its section,"
        " what was sent, what was expected, what came back and the likely mistake, and a summary ends"
        " the report.",
        epilog="Exit status: 0 if every check passes, 1 if any fails or is skipped, 2 if the server cannot be"
        " reached or an option is wrong. Examples: mechat serve --port 7878 --max-rate 0 & mechat conform"
        " --port 7878; mechat conform --port 7878 --format gradescope --output results.json;"
        " mechat conform --port 7878 --tls --cafile server.pem; mechat conform --list",
    )
    kit.add_argument("--host", default="127.0.0.1", help="server under test (default: %(default)s)")
    kit.add_argument("--port", type=port_number, help="TCP port of the server under test (required)")
    kit.add_argument(
        "--timeout",
        type=at_least(0.1, float),
        default=conform.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for each expected line before calling it a FAIL (default: %(default)s)",
    )
    kit.add_argument(
        "--features",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[conform.core.FEATURE],
        metavar="LIST",
        help="comma-separated features to grade (default: core, protocol 1; --list shows every feature)",
    )
    kit.add_argument(
        "--only", nargs="+", metavar="ID", help="run only these checks: ids, or sections like §2.1"
    )
    kit.add_argument("--list", action="store_true", help="list every check's id, section and title, and exit")
    kit.add_argument(
        "--format",
        choices=conform.FORMATS,
        default="text",
        help="text for people; json, junit (JUnit XML) or gradescope (results.json) for graders"
        " (default: %(default)s)",
    )
    kit.add_argument(
        "--output", metavar="FILE", help="write the report to FILE; stdout keeps the summary line"
    )
    kit.add_argument(
        "--weights",
        metavar="FILE",
        help='points per check, a JSON object of ids or sections, e.g. {"§2": 2, "full-duplex": 5};'
        " a check not named is worth 1",
    )
    kit.add_argument(
        "--mailbox-size",
        type=at_least(0, int),
        default=protocol.DEFAULT_MAILBOX_SIZE,
        metavar="N",
        help="messages the server keeps for one account, for the check mailbox-full (default: %(default)s,"
        " the spec's)",
    )
    kit.add_argument(
        "--server-command",
        metavar="CMD",
        help="a shell command that starts the server, with {port} where its port goes and {db} where a"
        " fresh database file may go: stored-survives-restart starts a server of its own with it, kills"
        " it with SIGKILL and starts it again (without it, that check is skipped)",
    )
    add_tls_client(
        kit,
        "grade a server that serves TLS (mechat serve --tls-cert): every connection the kit makes speaks TLS",
    )
    kit.set_defaults(run=run_conform, parser=kit)


def add_tls_client(parser: argparse.ArgumentParser, meaning: str) -> None:
    """Add --tls and --cafile, the options of a client of a server that serves TLS (spec §2.5)."""
    parser.add_argument(
        "--tls",
        action="store_true",
        help=f"{meaning}; the server's certificate must name --host, and be signed by an authority"
        " in --cafile or, without it, one the system trusts",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the authorities in this file (PEM), such as the certificate a teacher handed out,"
        " instead of the system's; implies --tls",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; return the exit status."""
    if (args.tls_cert is None) != (args.tls_key is None):
        args.parser.error("--tls-cert and --tls-key go together")
    context = None  # before tuning: a bad file costs nothing
    if args.tls_cert is not None:
        context = load_tls(tls.server_context, args.tls_cert, args.tls_key)
        if context is None:
            return 1
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    if not args.all_cpus:
        tuning.pin_to_one_cpu()
    tuning.shrink_thread_stacks()
    tuning.switch_threads_less_often()
    tuning.collect_garbage_less_often()
    warning = tuning.raise_file_limit(args.max_clients)
    if warning:
        logging.getLogger("mechat").warning(warning)
    limits = Limits(
        max_clients=args.max_clients,
        nickname_timeout=args.nick_timeout,
        send_timeout=args.send_timeout,
        max_rate=args.max_rate,
        send_queue=args.send_queue,
        all_rate=args.all_rate,
        max_rooms=args.max_rooms,
        max_members=args.max_members,
        mailbox_size=args.mailbox_size,
    )
    store = open_store(args.db or accounts.default_path(), args.mailbox_size)
    if store is None:
        return 1
    try:
        server = ChatServer((args.host, args.port), limits, ssl_context=context, store=store)
    except OSError as error:
        store.close()
        print(
            "mechat: cannot listen on %s:%d: %s" % (args.host, args.port, error.strerror or error),
            file=sys.stderr,
        )
        return 1
    previous = {signum: signal.signal(signum, stop_serving(server)) for signum in STOP_SIGNALS}
    logging.getLogger("mechat").info(
        "mechat %s listening on %s:%d%s", __version__, args.host, server.port, " (TLS)" if context else ""
    )
    try:
        server.serve_forever(poll_interval=SHUTDOWN_POLL)
    finally:
        server.server_close()
        store.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def open_store(path: str, mailbox_size: int) -> Optional[accounts.AccountStore]:
    """Open the accounts' store and log where it is; or say in one line why it cannot be (§9.12)."""
    try:
        store = accounts.AccountStore(path, mailbox_size)
    except (OSError, sqlite3.Error, accounts.NewerSchema) as error:
        print("mechat: cannot open the store %s: %s" % (path, error), file=sys.stderr)
        return None
    where = "in memory: nothing is kept" if path == accounts.MEMORY else path
    count = len(store.names())
    logging.getLogger("mechat").info("accounts and stored messages: %s (%d accounts)", where, count)
    return store


#: The signals that stop the server cleanly (spec §10).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: Seconds serve_forever() may take to notice a stop request (spec §10).
SHUTDOWN_POLL = 0.1


def stop_serving(server: ChatServer) -> Callable[[int, Optional[FrameType]], None]:
    """Make a signal handler that stops ``server`` cleanly.

    Raising KeyboardInterrupt from the handler, as Python does for Ctrl-C,
    can land inside socketserver while it hands a new connection to its
    thread; socketserver then closes that socket under the running handler,
    and that client never gets #server_shutdown.  So the handler only asks
    serve_forever() to return, from a thread, since shutdown() waits for it.
    """

    def handle(signum: int, frame: Optional[FrameType]) -> None:
        logging.getLogger("mechat").info("shutting down")
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    return handle


def load_tls(make: Callable[..., ssl.SSLContext], *files: Optional[str]) -> Optional[ssl.SSLContext]:
    """Return ``make(*files)``, a TLS context; or say in one line what is wrong and return None."""
    try:
        return make(*files)
    except ssl.SSLError as error:  # before OSError, of which it is one
        reason = "%s; is each file PEM, the certificate chain and its own key?" % tls.reason_of(error)
    except OSError as error:
        reason = "%s: %s" % (error.filename, error.strerror) if error.filename else str(error)
    named = " and ".join(name for name in files if name is not None) or "the system's authorities"
    print("mechat: cannot use %s for TLS: %s" % (named, reason), file=sys.stderr)
    return None


def run_chat(args: argparse.Namespace) -> int:
    """Chat until either side leaves; return the exit status."""
    from mechat import client

    context = None
    if args.tls or args.cafile is not None:
        context = load_tls(tls.client_context, args.cafile)
        if context is None:
            return 1
    account = None
    if args.register is not None:
        account = client.Account(args.register, new=True)
    elif args.login is not None:
        account = client.Account(args.login)
    return client.main(args.host, args.port, args.nick, args.color, context, account, args.insecure)


def run_load(args: argparse.Namespace) -> int:
    """Run one load test and print its report; return 0 if it all checked out."""
    from mechat import client, load

    context = None
    if args.tls or args.cafile is not None:
        context = load_tls(tls.client_context, args.cafile)
        if context is None:
            return 2
    try:
        report = load.run(args.host, args.port, args, context)
    except ValueError as error:
        print("mechat load: %s" % error, file=sys.stderr)
        return 2
    except tls.TLSError as error:  # the first client's handshake: nothing could be measured
        print(
            "mechat load: no TLS with %s:%d: %s. %s"
            % (args.host, args.port, error, client.tls_advice(error)),
            file=sys.stderr,
        )
        return 2
    except ConnectionRefusedError as error:
        print(
            "mechat load: cannot connect to %s:%d (%s). Is a server running there?"
            % (args.host, args.port, error.strerror),
            file=sys.stderr,
        )
        return 2
    print("\n".join(load.describe(report)))
    return 0 if report.ok else 1


def run_conform(args: argparse.Namespace) -> int:
    """Grade the server at --host and --port, or list the checks; return the exit status."""
    try:
        checks = conform.select(args.features, args.only)
        settings = conform.accounts.kit_settings(args.mailbox_size, args.server_command)
        checks = conform.accounts.configured(checks, settings)
        weights = conform.load_weights(read_text(args.weights)) if args.weights else {}
    except (ValueError, OSError) as error:
        args.parser.error(str(error))
    if args.list:
        sys.stdout.write(conform.listing(checks))
        return 0
    if args.port is None:
        args.parser.error("--port is required: the port of the server to grade")
    context = None  # before the run, so that a wrong file costs no report
    if args.tls or args.cafile is not None:
        context = load_tls(tls.client_context, args.cafile)
        if context is None:
            return 2
    if any(check.feature == conform.rooms.LIMITS_FEATURE for check in checks):
        # room-full holds a room's worth of connections open at once: more
        # than macOS's default of 256 descriptors a process.
        warning = tuning.raise_file_limit(conform.rooms.MOST_CONNECTIONS)
        if warning:
            print("mechat conform: %s" % warning, file=sys.stderr)
    output = open_report(args)
    try:
        status = conform.run(
            args.host, args.port, args.timeout, None, checks, args.format, output, weights, context
        )
    except BaseException:
        if output is not None:
            output.close()
            os.unlink(output.name)
        raise
    if output is not None:
        output.close()
        finish_report(output.name, args.output, status)
    return status


def open_report(args: argparse.Namespace) -> Optional[TextIO]:
    """Open FILE.partial for --output FILE before the run, so that a wrong path costs no run."""
    parser: argparse.ArgumentParser = args.parser
    if not args.output:
        return None
    try:
        return open(f"{args.output}.partial", "w", encoding="utf-8")  # run_conform closes it
    except OSError as error:
        parser.error(f"cannot write the report to {args.output}: {error.strerror}")


def finish_report(partial: str, path: str, status: int) -> None:
    """Put a finished report in place of any older one; leave the older one if nothing was graded."""
    if status == 2:  # the server could not be reached: there is no report
        os.unlink(partial)
    else:
        os.replace(partial, path)


def read_text(path: str) -> str:
    """Return a file's text, without a byte order mark; an OSError names the file."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            return file.read()
    except OSError as error:
        raise OSError(f"cannot read {path}: {error.strerror}") from None


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named on the command line."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except BrokenPipeError:
        # Whoever read the output stopped (mechat conform | head): stop quietly, and
        # keep Python from complaining again as it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
