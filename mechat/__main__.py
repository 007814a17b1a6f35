"""The command line: ``python -m mechat serve | chat | load``.

This module only parses arguments and wires the pieces together; every
behaviour lives in the module it names.
"""

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Callable, List, Optional

from mechat import __version__, protocol, tuning
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
    serve.add_argument(
        "--max-clients",
        type=at_least(1, int),
        default=protocol.DEFAULT_MAX_CLIENTS,
        metavar="N",
        help="connections served at once (default: %(default)s)",
    )
    serve.add_argument(
        "--nick-timeout",
        type=at_least(0.1, float),
        default=protocol.DEFAULT_NICKNAME_TIMEOUT,
        metavar="SECONDS",
        help="time a client has to choose a nickname (default: %(default)s)",
    )
    serve.add_argument(
        "--send-timeout",
        type=at_least(0.1, float),
        default=protocol.DEFAULT_SEND_TIMEOUT,
        metavar="SECONDS",
        help="time a write may block before a client that does not read is dropped (default: %(default)s)",
    )
    serve.add_argument(
        "--max-rate",
        type=at_least(0, float),
        default=protocol.DEFAULT_MAX_RATE,
        metavar="LINES_PER_SECOND",
        help="lines a second one client may send; 0 turns flood control off (default: %(default)s)",
    )
    serve.add_argument(
        "--all-cpus",
        action="store_true",
        help="let threads run on every CPU instead of one; one is faster under load,"
        " because only one thread runs Python at a time (see docs/performance)",
    )
    serve.set_defaults(run=run_serve)


def add_chat_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat chat'."""
    chat = commands.add_parser(
        "chat",
        help="chat with a stranger",
        description="Connect to a mechat server and chat. End with /quit or Ctrl-D.",
    )
    add_address(chat)
    chat.add_argument("--nick", metavar="NAME", help="nickname to use (default: ask)")
    chat.add_argument(
        "--no-color",
        dest="color",
        action="store_false",
        help="never colour the output (NO_COLOR in the environment does the same)",
    )
    chat.set_defaults(run=run_chat)


def add_load_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Define 'mechat load'."""
    load = commands.add_parser(
        "load",
        help="measure a chat server with many clients",
        description="Connect pairs of clients to a server, make them talk, and check that every line"
        " arrived exactly once, in order and intact. Exits 1 if anything went wrong.",
    )
    add_address(load)
    load.add_argument(
        "--pairs",
        type=at_least(1, int),
        default=10,
        metavar="N",
        help="pairs of clients, so 2*N connections (default: %(default)s)",
    )
    load.add_argument(
        "--messages",
        type=at_least(1, int),
        default=1000,
        metavar="M",
        help="round trips per pair, or lines per client in a flood (default: %(default)s)",
    )
    load.add_argument(
        "--size",
        type=at_least(28, int),
        default=64,
        metavar="B",
        help="octets per line, LF not counted, 28 to 2000 (default: %(default)s)",
    )
    load.add_argument(
        "--mode",
        choices=["pingpong", "flood"],
        default="pingpong",
        help="one line in flight per pair, or everyone sends at once (default: %(default)s)",
    )
    load.add_argument(
        "--window",
        type=at_least(1, int),
        default=128,
        metavar="W",
        help="flood: lines a client may have sent that its partner has not read (default: %(default)s)",
    )
    load.add_argument(
        "--timeout",
        type=at_least(0.1, float),
        default=60.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)s)",
    )
    load.set_defaults(run=run_load)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; return the exit status."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    if not args.all_cpus:
        tuning.pin_to_one_cpu()
    tuning.shrink_thread_stacks()
    tuning.switch_threads_less_often()
    warning = tuning.raise_file_limit(args.max_clients)
    if warning:
        logging.getLogger("mechat").warning(warning)
    limits = Limits(
        max_clients=args.max_clients,
        nickname_timeout=args.nick_timeout,
        send_timeout=args.send_timeout,
        max_rate=args.max_rate,
    )
    try:
        server = ChatServer((args.host, args.port), limits)
    except OSError as error:
        print(
            "mechat: cannot listen on %s:%d: %s" % (args.host, args.port, error.strerror or error),
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, interrupt)
    logging.getLogger("mechat").info("mechat %s listening on %s:%d", __version__, args.host, server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logging.getLogger("mechat").info("shutting down")
    finally:
        server.server_close()
    return 0


def interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """Turn SIGTERM into the same clean stop as Ctrl-C."""
    raise KeyboardInterrupt


def run_chat(args: argparse.Namespace) -> int:
    """Chat until either side leaves; return the exit status."""
    from mechat import client

    return client.main(args.host, args.port, args.nick, args.color)


def run_load(args: argparse.Namespace) -> int:
    """Run one load test and print its report; return 0 if it all checked out."""
    from mechat import load

    try:
        report = load.run(args.host, args.port, args)
    except ValueError as error:
        print("mechat load: %s" % error, file=sys.stderr)
        return 2
    print("\n".join(load.describe(report)))
    return 0 if report.ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named on the command line."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
