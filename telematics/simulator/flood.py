"""Bad traffic for the listeners: garbage bytes, half-open connections, frames announcing
huge lengths, oversized HTTP requests and junk datagrams, on every port at once.

The reliability suite floods the listeners with it while simulated units report beside
them, and ``manage.py simulate --flood`` does the same against a real server. It runs
best as a process of its own (``python -m telematics.simulator.flood``), so the flood has
its own core, as an attacker elsewhere would, and the figures of the good units measure
the listeners rather than the flood's share of the generator's loop. It prints one JSON
object with what it did. It needs no Django and no database.

What it sends, spread evenly over every TCP port (Teltonika, GT06, NMEA, OsmAnd):

- random bytes (1 byte to 4 KB), the connection held a moment, then closed;
- a frame announcing a huge length (Teltonika 2 GB AVL packet, GT06 64 KB frame, an NMEA
  line of 10 KB), which must be refused;
- an oversized HTTP request (a 10 MB body of which 200 KB arrive), on every port;
- a login of a unit nobody registered (a handful of identifiers, so the listeners'
  throttling of unknown units is what gets exercised, not the database);
- half-open connections: a partial login or request, then nothing until the flood ends;

and datagrams of random bytes to the Teltonika UDP port and CoAP requests with junk
bodies to the CoAP port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import struct
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from telematics.simulator.encoders import gt06_login, nmea_identification, teltonika_login

__all__ = ["FloodResult", "flood", "main", "parse_ports"]

STREAM_PORTS = ("teltonika", "gt06", "nmea", "osmand")
DATAGRAM_PORTS = ("teltonika_udp", "coap")
UNKNOWN_IMEIS = ("353000000000017", "353000000000025", "353000000000033")
MAX_IN_FLIGHT = 400  # junk connections open at once, besides the half-open ones

HALF_OPEN = {
    "teltonika": b"\x00\x0f35999",  # an IMEI login cut after five digits
    "gt06": b"\x78\x78\x0d\x01\x03\x59",  # a login cut after two bytes of IMEI
    "nmea": b"$PGID,unfinished",  # no end of line, ever
    "osmand": b"POST / HTTP/1.1\r\nHost: fleet\r\nContent-Length: 100\r\n\r\n0123456789",
}


@dataclass
class FloodResult:
    connections: int = 0  # junk connections made (half-open ones included)
    not_accepted: int = 0  # connection attempts that failed (refused, reset, timed out)
    cut: int = 0  # junk connections the listener closed before the flood let go
    half_open: int = 0  # held until the end
    bytes_sent: int = 0
    datagrams: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # HTTP status lines received
    by_port: dict[str, int] = field(default_factory=dict)  # connections per port


def _huge(name: str, rng: random.Random) -> bytes:
    if name == "teltonika":
        return b"\x00\x00\x00\x00\x7f\xff\xff\xff\x08\x01" + rng.randbytes(200)
    if name == "gt06":
        return b"\x79\x79\xff\xff\x22" + rng.randbytes(300)
    if name == "nmea":
        return b"$GPRMC," + b"1" * 10_000
    return (b"POST / HTTP/1.1\r\nHost: fleet\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b"a" * 200_000)


def _unknown_login(name: str, rng: random.Random) -> bytes:
    imei = rng.choice(UNKNOWN_IMEIS)
    if name == "teltonika":
        return teltonika_login(imei)
    if name == "gt06":
        return gt06_login(imei, 1)
    if name == "nmea":
        return (nmea_identification(imei) + "\r\n").encode()
    return f"GET /?id={imei}&lat=52.5&lon=13.4 HTTP/1.1\r\nHost: fleet\r\n\r\n".encode()


def _junk(name: str, rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.5:
        return rng.randbytes(rng.randint(1, 4000))
    if kind < 0.65:
        return _huge(name, rng)
    if kind < 0.8:
        return _huge("osmand", rng)  # an oversized HTTP request, whatever the port speaks
    return _unknown_login(name, rng)


async def _junk_connection(host: str, port: int, payload: bytes, hold: float,
                           result: FloodResult) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        result.not_accepted += 1
        return
    result.connections += 1
    try:
        writer.write(payload)
        result.bytes_sent += len(payload)
        with contextlib.suppress(OSError):
            await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(4096), hold)
        except TimeoutError:
            return  # still open when we let go
        except OSError:
            answer = b""
        result.cut += 1  # the listener answered and hung up, or just hung up
        if answer.startswith(b"HTTP/"):
            status = answer.split(b"\r\n", 1)[0].decode("latin-1")[:40]
            result.answers[status] = result.answers.get(status, 0) + 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _half_open(host: str, port: int, prefix: bytes, until: asyncio.Event,
                     result: FloodResult) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        result.not_accepted += 1
        return
    result.connections += 1
    result.half_open += 1
    try:
        writer.write(prefix)
        result.bytes_sent += len(prefix)
        await until.wait()
    finally:
        writer.close()


def _coap_junk(identifier: str, message_id: int, rng: random.Random) -> bytes:
    """A non-confirmable CoAP POST to fleet/<identifier>/position with a junk body."""
    options = b""
    for number, segment in enumerate(("fleet", identifier, "position")):
        raw = segment.encode()
        options += bytes([((11 if number == 0 else 0) << 4) | len(raw)]) + raw
    header = bytes([0x50, 0x02]) + struct.pack(">H", message_id & 0xFFFF)  # v1, NON, POST
    return header + options + b"\xff" + rng.randbytes(rng.randint(1, 500))


async def flood(
    host: str,
    ports: Mapping[str, int],
    *,
    duration: float,
    connections_per_second: float = 100.0,
    half_open_per_port: int = 25,
    datagrams_per_second: float = 50.0,
    coap_identifier: str = "coap-unit",
    seed: int = 7,
    stop: asyncio.Event | None = None,
) -> FloodResult:
    """Flood the listeners on ``ports`` for ``duration`` seconds (or until ``stop`` is
    set); returns what was sent.

    Ports missing from ``ports`` are left alone. Junk connections start at an even pace
    (at most MAX_IN_FLIGHT open at once); half-open connections are opened first and held
    until the end.
    """
    rng = random.Random(seed)
    result = FloodResult()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    streams = [name for name in STREAM_PORTS if name in ports]
    until = asyncio.Event()
    held = [
        asyncio.create_task(_half_open(host, ports[name], HALF_OPEN[name], until, result))
        for name in streams
        for _ in range(half_open_per_port)
    ]
    datagrams = asyncio.create_task(
        _datagrams(host, ports, duration, datagrams_per_second, coap_identifier, rng, result,
                   stop)
    )
    junk: set[asyncio.Task] = set()
    ends = loop.time() + duration
    count = 0
    while streams and connections_per_second > 0 and loop.time() < ends and not stop.is_set():
        name = streams[count % len(streams)]
        count += 1
        result.by_port[name] = result.by_port.get(name, 0) + 1
        if len(junk) < MAX_IN_FLIGHT:
            task = asyncio.create_task(_junk_connection(
                host, ports[name], _junk(name, rng), rng.uniform(0.1, 1.5), result))
            junk.add(task)
            task.add_done_callback(junk.discard)
        await asyncio.sleep(1 / connections_per_second)
    if not streams or connections_per_second <= 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, ends - loop.time()))
    await asyncio.gather(*junk, datagrams, return_exceptions=True)
    until.set()
    await asyncio.gather(*held, return_exceptions=True)
    return result


async def _datagrams(host: str, ports: Mapping[str, int], duration: float, per_second: float,
                     coap_identifier: str, rng: random.Random, result: FloodResult,
                     stop: asyncio.Event) -> None:
    targets = [name for name in DATAGRAM_PORTS if name in ports]
    if not targets or per_second <= 0:
        return
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        ends = loop.time() + duration
        sent = 0
        while loop.time() < ends and not stop.is_set():
            name = targets[sent % len(targets)]
            if name == "coap" and sent % 4:
                payload = _coap_junk(coap_identifier, sent, rng)
            else:
                payload = rng.randbytes(rng.randint(1, 1200))
            with contextlib.suppress(OSError):  # a full buffer or an ICMP error: go on
                sock.sendto(payload, (host, ports[name]))
                result.datagrams += 1
                result.bytes_sent += len(payload)
            sent += 1
            await asyncio.sleep(1 / per_second)


def parse_ports(text: str) -> dict[str, int]:
    """``teltonika=5027,gt06=5023,...`` (any of STREAM_PORTS and DATAGRAM_PORTS)."""
    ports = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, number = item.partition("=")
        if name not in STREAM_PORTS + DATAGRAM_PORTS or not number.isdigit():
            raise ValueError(f"{item!r} is not <port name>=<number>")
        ports[name] = int(number)
    return ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", required=True,
                        help="e.g. teltonika=5027,gt06=5023,nmea=5005,osmand=5055,"
                             "teltonika_udp=5027,coap=5683")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="junk connections a second")
    parser.add_argument("--half-open", type=int, default=25, help="held connections per port")
    parser.add_argument("--datagrams", type=float, default=50.0, help="junk datagrams a second")
    parser.add_argument("--coap-identifier", default="coap-unit")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        ports = parse_ports(args.ports)
    except ValueError as error:
        parser.error(str(error))

    async def run() -> FloodResult:
        stop = asyncio.Event()
        # Stopped early with SIGTERM or Ctrl-C, it still reports what it did.
        for number in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(number, stop.set)
        return await flood(
            args.host, ports, duration=args.duration, connections_per_second=args.rate,
            half_open_per_port=args.half_open, datagrams_per_second=args.datagrams,
            coap_identifier=args.coap_identifier, seed=args.seed, stop=stop)

    print(json.dumps(asdict(asyncio.run(run()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
