"""TLS for a connection that one thread reads while others write it.

Why not :class:`ssl.SSLSocket`.  The server reads each socket in its
handler thread while other threads write it, under the connection's send
lock: its own handler's replies, other handlers' relayed lines, the drain
thread's send queue (:mod:`mechat.connection`).  An SSLSocket breaks that
three ways:

* its ``recv()`` and ``send()`` call into one OpenSSL object, and OpenSSL's
  objects are not safe to use from two threads at once;
* its ``send()`` refuses flags, so :func:`~mechat.connection.send_now`
  could not pass ``MSG_DONTWAIT``, and every write could wait for a client
  that does not read;
* its ``shutdown()`` drops the TLS layer, so a line written after another
  thread hung up the connection would go out in clear text.

The shape.  :class:`TLSChannel` keeps TLS off the socket.  An
:class:`ssl.SSLObject` reads ciphertext from one :class:`ssl.MemoryBIO` and
writes ciphertext to another, and the socket carries that ciphertext as
plain bytes.  So everything :mod:`mechat.connection` and
:mod:`mechat.drain` do with a socket stays as it is (``MSG_DONTWAIT``, the
send queue, ``poll()``, a hang-up from another thread, ``POLLRDHUP``, the
linger at close); only what goes in and what comes out changes::

    handler thread (the reader)            any writer, holding the send lock
    recv() -> decrypt() -> LineBuffer      outbox -> encrypt() -> send_now() / send queue
                    \\                          /
                     +---- the TLS lock ------+
               incoming BIO -> SSLObject -> outgoing BIO

Threads.  :meth:`TLSChannel.handshake` runs in the handler thread, before
any other thread knows the connection, within a deadline (the nickname's,
§9.2).  :meth:`TLSChannel.decrypt` is called by the reader alone.
:meth:`TLSChannel.encrypt` and :meth:`TLSChannel.close_notify` are called
by writers holding the connection's send lock, which put the ciphertext on
the socket or at the end of the send queue before they let go of it: so
records reach the wire in the order they were made.

The TLS lock.  The reader and the writers share one SSLObject, so one
lock guards every call into it and into its two buffers.  Without it, a
flood both ways (tests/test_tls.py) garbles records or crashes the
interpreter inside OpenSSL.  It is the innermost lock: nothing else is
taken while it is held, and no socket call is made under it, so it is
held only while OpenSSL works in memory, a few microseconds a line.  The
order is the connection's send lock, then the TLS lock; the reader takes
it holding no other lock.

Bytes made while reading.  Reading can make TLS write.  In TLS 1.3 either
side may ask for new keys (KeyUpdate, RFC 8446 §4.6.3), and OpenSSL may
send the KeyUpdate it was asked for, or its own, from inside a read; a
TLS 1.2 peer that tries to renegotiate is answered with an alert.  Once a
KeyUpdate is made, every record made after it uses the new keys, so it
must reach the wire before them.  The reader cannot send it itself: it
would need the send lock, and taking that while holding the TLS lock
inverts the order, while taking it after letting go of the TLS lock lets
a writer's newer records overtake it.  So the rule is: only
:meth:`~TLSChannel.encrypt` and :meth:`~TLSChannel.close_notify` take
ciphertext out of the outgoing buffer, and their callers hold the send
lock.  The outgoing buffer is the one queue of ciphertext that no writer
has claimed yet, in the order OpenSSL made it.  :meth:`~TLSChannel.decrypt`
leaves there what it made and says so (:attr:`Decrypted.reply_pending`);
its caller, holding no lock, asks for a flush (the server, at its flush
point), or lets the next write take it first (the client).  RFC 8446 asks
only that a KeyUpdate answer go before the next application data, and
that is where it goes.

The wrong port.  A plaintext client on a TLS port sends a line where a
TLS record should be; a TLS client on a plaintext port gets a mechat
notice where a TLS record should be.  The first bytes from the peer
tell: every TLS record opens with its content type and version
(RFC 8446 §5.1).  :meth:`TLSChannel.handshake` raises :class:`NotTLS`,
whose message is one line that quotes what came; a plaintext server can
recognise a TLS client's first bytes with :func:`looks_like_tls`.

The client.  The terminal client has a reader thread and a writer thread
too, so the same rule holds, and an SSLSocket is not safe there either.
:class:`TLSClientSocket` puts the same :class:`TLSChannel` behind
``recv()`` and ``sendall()``.
"""

import socket
import ssl
import threading
import time
from typing import NamedTuple, Optional, Union

#: The first octet of a TLS record that carries a handshake message, such
#: as ClientHello and ServerHello (RFC 8446 §5.1, ContentType handshake(22)).
HANDSHAKE_RECORD = 0x16

#: The first octet of a TLS record that carries an alert (ContentType
#: alert(21)): a server may refuse a ClientHello with one.
ALERT_RECORD = 0x15

#: The second octet of every TLS record: the major version, 3 since SSL 3.0
#: (legacy_record_version is 0x0301 or 0x0303, RFC 8446 §5.1).
RECORD_MAJOR_VERSION = 0x03

#: Octets asked of each recv() during the handshake; a flight is a few kB.
HANDSHAKE_RECV_SIZE = 65536

#: Octets of plaintext asked of each SSLObject.read(); it returns at most
#: one record, 16,384 octets, and decrypt() reads until none is left.
READ_SIZE = 65536

#: Octets of a plaintext peer's first line quoted in a NotTLS message.
QUOTED_OCTETS = 40

#: The oldest TLS spoken.  TLS 1.0 and 1.1 are deprecated (RFC 8996).
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TLSError(OSError):
    """TLS could not be set up with the peer; the message is one line, fit for a log or a user."""


class HandshakeTimeout(TLSError):
    """The peer did not finish the TLS handshake by its deadline (§9.2)."""


class NotTLS(TLSError):
    """The peer spoke plain text where TLS was expected: a client or server on the wrong port."""


class HandshakeFailed(TLSError):
    """The TLS handshake failed: an untrusted certificate, no common version, the peer gone."""


class Decrypted(NamedTuple):
    """What one call of :meth:`TLSChannel.decrypt` found."""

    #: Every octet of application data that has arrived whole, in order.
    plaintext: bytes
    #: The peer has ended the stream (close_notify or end of file): nothing more will come.
    ended: bool
    #: Reading made ciphertext for the peer, waiting in the channel for the next write.
    reply_pending: bool


def server_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """Return a context that serves TLS 1.2 or later with the given certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # a renegotiation is refused, never carried out
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: Optional[str] = None) -> ssl.SSLContext:
    """Return a context that trusts ``cafile``'s authorities, or the system's when None, and checks names."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def looks_like_tls(data: bytes) -> bool:
    """Tell whether ``data``, the first octets from a peer, open a TLS record rather than a line of text."""
    if not data or data[0] not in (HANDSHAKE_RECORD, ALERT_RECORD):
        return False
    return len(data) < 2 or data[1] == RECORD_MAJOR_VERSION


#: The commands whose argument is a password, which no message may quote.
SECRET_COMMANDS = (b"/register ", b"/login ", b"/delete ")


def quote_first_line(data: bytes) -> str:
    """Return the first line of ``data`` quoted for a message, cut to QUOTED_OCTETS; never a password."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if line.startswith(SECRET_COMMANDS):
        return repr(line.split(b" ", 1)[0].decode("ascii")) + " and the rest not shown"
    text = line[:QUOTED_OCTETS].decode("utf-8", "replace")
    return repr(text) + ("..." if len(line) > QUOTED_OCTETS else "")


def reason_of(error: ssl.SSLError) -> str:
    """Return what went wrong in an SSLError, in words and on one line."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "the certificate was refused: %s" % error.verify_message
    if error.reason:  # OpenSSL's name for it, such as TLSV1_ALERT_UNKNOWN_CA
        return error.reason.replace("_", " ").lower()
    return str(error).splitlines()[0]


class TLSChannel:
    """TLS between ciphertext on a socket and plaintext for mechat, for one reader and many writers.

    The socket itself is never touched here, except by :meth:`handshake`:
    the caller moves ciphertext between the socket and :meth:`decrypt` or
    :meth:`encrypt`.
    """

    def __init__(
        self, context: ssl.SSLContext, server_side: bool, server_hostname: Optional[str] = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()  # ciphertext from the peer, not yet read by TLS
        self._outgoing = ssl.MemoryBIO()  # ciphertext for the peer, not yet claimed by a writer
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side, server_hostname)
        #: The TLS lock: guards every call into _tls, _incoming and _outgoing.  The innermost
        #: lock: taken after the connection's send lock, never with a socket call under it.
        self._lock = threading.Lock()
        self.peer = "client" if server_side else "server"  # for messages

    # -- The handshake: the handler thread, before anyone else writes ------------

    def handshake(self, sock: socket.socket, deadline: float) -> Decrypted:
        """Do the TLS handshake on ``sock`` by the monotonic ``deadline``; return what came with its end.

        The plaintext returned arrived with the last handshake message and
        must be read before anything :meth:`decrypt` gives.  Raise
        HandshakeTimeout, NotTLS or HandshakeFailed, each with a one-line
        message; OSError if the connection resets.

        The socket blocks in recv() and sendall() with a Python timeout set
        to what is left of the deadline (CPython waits in poll() for each),
        and gets its own timeout back at the end.
        """
        seconds = max(0.0, deadline - time.monotonic())
        previous = sock.gettimeout()
        try:
            first = True
            while not self._handshake_step(sock, deadline, seconds):
                self._feed(self._receive_by(sock, deadline, seconds), first)
                first = False
        except socket.timeout:
            raise HandshakeTimeout("no TLS handshake from the %s in %.1f s" % (self.peer, seconds)) from None
        finally:
            sock.settimeout(previous)
        with self._lock:
            return self._read_all()

    def _handshake_step(self, sock: socket.socket, deadline: float, seconds: float) -> bool:
        """Take the handshake as far as what has arrived allows, send what it made; return True once done."""
        done = False
        failure: Optional[ssl.SSLError] = None
        with self._lock:
            try:
                self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass  # the peer's next flight is needed
            except ssl.SSLError as error:
                failure = error
            flight = self._outgoing.read()  # on a failure, the alert that tells the peer why
        self._send_by(sock, flight, deadline, seconds, quietly=failure is not None)
        if failure is not None:
            raise HandshakeFailed("TLS handshake with the %s failed: %s" % (self.peer, reason_of(failure)))
        return done

    def _feed(self, ciphertext: bytes, first: bool) -> None:
        """Hand what the peer sent to TLS, first checking that its first octets are TLS at all."""
        if not ciphertext:
            raise HandshakeFailed("the %s closed the connection during the TLS handshake" % self.peer)
        if first and not looks_like_tls(ciphertext):
            raise NotTLS("the %s spoke plain text, not TLS: %s" % (self.peer, quote_first_line(ciphertext)))
        with self._lock:
            self._incoming.write(ciphertext)

    @staticmethod
    def _receive_by(sock: socket.socket, deadline: float, seconds: float) -> bytes:
        """Receive what the peer sends next, waiting at most until ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("the handshake took over %.1f s" % seconds)
        sock.settimeout(remaining)
        return sock.recv(HANDSHAKE_RECV_SIZE)

    @staticmethod
    def _send_by(sock: socket.socket, flight: bytes, deadline: float, seconds: float, quietly: bool) -> None:
        """Send a handshake flight, all of it by ``deadline``; a farewell alert is sent ``quietly``."""
        if not flight:
            return
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(flight)
        except OSError:  # socket.timeout included
            if not quietly:
                raise

    # -- Reading: the reader thread alone ----------------------------------------

    def decrypt(self, ciphertext: bytes) -> Decrypted:
        """Return the plaintext that ``ciphertext`` completes; an empty ``ciphertext`` is the end of file.

        What a record cut by the network does not finish stays inside,
        for the next call.  Raise ssl.SSLError (an OSError) if the peer
        sends something that is not TLS, or breaks it.
        """
        with self._lock:
            if ciphertext:
                self._incoming.write(ciphertext)
            else:
                self._incoming.write_eof()
            return self._read_all()

    def _read_all(self) -> Decrypted:
        """Read every whole record's plaintext; call with the TLS lock held."""
        chunks = []
        ended = False
        while not ended:
            try:
                chunk = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break  # nothing more until the peer sends more
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                ended = True  # close_notify, or an end of file without one
            else:
                chunks.append(chunk)
                ended = not chunk  # Python's read() answers a close_notify with b""
        return Decrypted(b"".join(chunks), ended, self._outgoing.pending > 0)

    # -- Writing: any thread holding the connection's send lock -----------------------

    def encrypt(self, plaintext: Union[bytes, bytearray]) -> bytes:
        """Return the ciphertext to send next: anything reading left waiting, then ``plaintext`` encrypted.

        Call with the connection's send lock held, and put the result on
        the socket or in the send queue before letting go of it, so that
        records reach the wire in the order they were made.  An empty
        ``plaintext`` just takes what reading left (see Decrypted.reply_pending).
        """
        with self._lock:
            if plaintext:
                self._tls.write(plaintext)  # a memory buffer takes it all: nothing to retry
            return self._outgoing.read()

    def close_notify(self) -> bytes:
        """Return the ciphertext that ends our side of the stream: anything waiting, then close_notify.

        Call with the send lock held, after the last encrypt(); nothing may
        be encrypted after it.  Our close_notify does not wait for the
        peer's: the connection closes next anyway.
        """
        with self._lock:
            try:
                self._tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # ours is made; the peer's has not come, and need not
            except ssl.SSLError:
                pass  # broken, or never set up: there is nothing to end cleanly
            return self._outgoing.read()


class TLSClientSocket:
    """The terminal client's connection to a TLS server: recv() and sendall() as on a socket.

    The client's reader thread calls :meth:`recv`, and its writer thread,
    and its reader for held lines, call :meth:`sendall` (mechat.client).
    Both go through one :class:`TLSChannel`.  Bytes that reading makes
    (a KeyUpdate answer) wait in the channel and go out first with the next
    sendall(): the reader never writes, so it can never wait for a server
    that is itself waiting for the client to read.

    Locks: the caller's own send lock, if any, then ``_write_lock``, then
    the TLS lock.  ``_write_lock`` keeps each encrypt() and the sendall()
    of its ciphertext together, so that records leave in order.  The
    plaintext buffer is the reader's alone.

    No close_notify is sent at close: the client ends a session with
    ``/quit`` (§5.1) or after the server's last notice, and the server
    takes a bare end of file as the end (TLSChannel.decrypt).
    """

    def __init__(self, sock: socket.socket, channel: TLSChannel, first: Decrypted) -> None:
        self._sock = sock
        self._channel = channel
        self._write_lock = threading.Lock()
        self._unread = bytearray(first.plaintext)  # decrypted, not yet returned by recv()
        self._ended = first.ended

    def recv(self, size: int) -> bytes:
        """Return at most ``size`` octets of plaintext, waiting for some; b"" once the server has ended."""
        while not self._unread and not self._ended:
            received = self._channel.decrypt(self._sock.recv(READ_SIZE))
            self._unread += received.plaintext
            self._ended = received.ended
        chunk = bytes(self._unread[:size])
        del self._unread[:size]
        return chunk

    def sendall(self, data: bytes) -> None:
        """Encrypt ``data`` and send all of it, after anything reading left waiting."""
        with self._write_lock:
            self._sock.sendall(self._channel.encrypt(data))

    def shutdown(self, how: int) -> None:
        """Shut the socket, as socket.shutdown() does; TLS stays as it is, and so wakes a reader in recv()."""
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def wrap_client_socket(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str, deadline: float
) -> TLSClientSocket:
    """Do the client's TLS handshake on a connected ``sock`` by ``deadline``; return the socket to chat on.

    Raise HandshakeTimeout, NotTLS (a plaintext server answered) or
    HandshakeFailed (the certificate is not trusted, say), each with a
    one-line message for the user.
    """
    channel = TLSChannel(context, server_side=False, server_hostname=server_hostname)
    return TLSClientSocket(sock, channel, channel.handshake(sock, deadline))
