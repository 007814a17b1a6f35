"""Fixtures: a real ChatServer on 127.0.0.1 port 0, run in a thread."""

import threading
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from mechat.server import ChatServer, Limits
from tests.peers import Peer

StartServer = Callable[..., ChatServer]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start servers with the given limits; stop them all after the test."""
    running: List[Tuple[ChatServer, threading.Thread]] = []

    def start(**limits: Any) -> ChatServer:
        server = ChatServer(("127.0.0.1", 0), Limits(**limits))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(start_server: StartServer) -> ChatServer:
    """One server with the default limits."""
    return start_server()


@pytest.fixture(autouse=True)
def close_peers() -> Iterator[None]:
    """Close every test Peer a test leaves open."""
    yield
    for peer in Peer.opened:
        peer.close()
    Peer.opened.clear()
