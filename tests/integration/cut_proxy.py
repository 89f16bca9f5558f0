"""A TCP proxy between workers and Redis that loses traffic as a cut network does, on a signal.

    python3 cut_proxy.py LISTEN_PORT REDIS_PORT

SIGHUP   arm: the next reply of Redis that hands a message over (it carries a "delivery_tag") is
         lost, and from then on nothing passes either way: the cut comes in the very moment a
         worker is being given a message, the moment a real cut loses one.
SIGUSR1  cut now: nothing passes either way.
SIGUSR2  heal: every connection open through the cut is reset (as a peer does once the network
         is back and it has forgotten the connection); new connections pass.
Each change is printed, so a test can wait for it (docker logs)."""

import asyncio
import signal
import socket
import struct
import sys

LISTEN_PORT, REDIS_PORT = int(sys.argv[1]), int(sys.argv[2])
state = {"armed": False, "cut": False}
open_connections = set()


def say(text):
    print(text, flush=True)


async def forward(reader, writer, from_redis):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if from_redis and state["armed"] and b'"delivery_tag"' in data:
                state.update(armed=False, cut=True)
                say(f"cut: lost a reply of {len(data)} bytes that handed a message over")
                continue
            if state["cut"]:
                continue
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(client_reader, client_writer):
    try:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", REDIS_PORT)
    except OSError:
        client_writer.close()
        return
    pair = (client_writer, redis_writer)
    open_connections.add(pair)
    try:
        await asyncio.gather(forward(client_reader, redis_writer, False), forward(redis_reader, client_writer, True))
    finally:
        open_connections.discard(pair)


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def heal():
    for client_writer, redis_writer in list(open_connections):
        reset(client_writer)
        reset(redis_writer)
    open_connections.clear()
    state.update(armed=False, cut=False)
    say("healed")


def arm():
    state["armed"] = True
    say("armed")


def cut_now():
    state.update(armed=False, cut=True)
    say("cut")


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, arm)
    loop.add_signal_handler(signal.SIGUSR1, cut_now)
    loop.add_signal_handler(signal.SIGUSR2, heal)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    server = await asyncio.start_server(serve, "127.0.0.1", LISTEN_PORT)
    say(f"listening on {LISTEN_PORT}")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except RuntimeError:  # stopped by SIGTERM
        pass
