"""``SocketBridge``: serve an instrument simulator on a local TCP port (raw socket).

    driver --TCPIP::127.0.0.1::<port>::SOCKET (VISA) or socket://127.0.0.1:<port>--> socket
        <-- bridge thread: feed(simulator)

The LAN counterpart of :class:`~hyplex.devices.pty_bridge.PtyBridge`: a driver reaches the
simulator through pyvisa-py's TCPIP socket session (or pyserial's ``socket://`` handler),
the path of an instrument on a terminal server or an LXI instrument's raw SCPI port. One
client at a time; the port is chosen by the OS unless given.
"""

from __future__ import annotations

import select
import socket
import threading

from hyplex.devices.instrument_sim import InstrumentSimulator


class SocketBridge:
    """Run ``simulator`` behind a TCP socket on ``host`` until :meth:`stop`.

    Parameters
    ----------
    simulator : InstrumentSimulator
    host : str
        Interface to listen on (default the loopback).
    port : int
        TCP port (0: any free port; see :attr:`port` once started).
    """

    def __init__(self, simulator: InstrumentSimulator, host: str = "127.0.0.1", port: int = 0):
        if int(port) != port or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
        self.simulator, self.host, self.port = simulator, host, int(port)
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def visa_resource(self) -> str:
        """The VISA resource name of the bridge (``TCPIP::host::port::SOCKET``)."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    @property
    def serial_url(self) -> str:
        """The pyserial URL of the bridge (``socket://host:port``)."""
        return f"socket://{self.host}:{self.port}"

    def start(self) -> SocketBridge:
        if self._thread is not None:
            raise RuntimeError("the bridge is already running")
        server = socket.create_server((self.host, self.port))
        self._server, self.port = server, server.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="hyplex-socket", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> SocketBridge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], 0.05)
            if not ready:
                continue
            client, _ = self._server.accept()
            with client:
                self._serve_client(client)

    def _serve_client(self, client: socket.socket) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([client], [], [], 0.05)
            if not ready:
                continue
            try:
                data = client.recv(4096)
            except OSError:
                return
            if not data:  # the driver closed its end
                return
            reply = self.simulator.feed(data)
            if reply:
                client.sendall(reply)
