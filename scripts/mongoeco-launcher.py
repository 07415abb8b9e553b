"""Runs the mongoeco MongoDB-wire emulator on 127.0.0.1 for tests and local use.

    .peers/venv-mongoeco/bin/python scripts/mongoeco-launcher.py --port 27017 \
        [--engine memory|sqlite] [--path FILE.sqlite] [--exit-on-stdin-eof]

Prints `ready <port>` on stdout once listening; exits cleanly on SIGTERM or
SIGINT (and, with --exit-on-stdin-eof, when stdin closes, i.e. when the
process that started it goes away). Fixes three wire mismatches between
mongoeco and the Rust `mongodb` driver: Int64 limit/skip/batchSize/getMore/
capped size (and killCursors ids) become plain integers on the way in; the
cursor id is sent as Int64 and every error reply carries a `code` on the way out.
"""

import argparse, asyncio, signal, sys, threading

from bson.int64 import Int64
from mongoeco.core.bson_scalars import BsonInt64
from mongoeco.engines import MemoryEngine, SQLiteEngine
from mongoeco.wire import proxy
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

INT_ARGS = ("limit", "skip", "batchSize", "getMore", "size", "max", "maxTimeMS")
_decode, _encode = proxy.decode_op_msg, proxy.encode_op_msg_response


def _plain(value):
    return value.value if isinstance(value, BsonInt64) else value


def decode_op_msg(header, payload):
    request = _decode(header, payload)
    body = request.body  # a mutable dict inside the frozen request
    for doc in (body, body.get("cursor")):
        for key in INT_ARGS if isinstance(doc, dict) else ():
            if key in doc:
                doc[key] = _plain(doc[key])
    if isinstance(body.get("cursors"), list):
        body["cursors"] = [_plain(c) for c in body["cursors"]]
    return request


def encode_op_msg_response(document, **kwargs):
    cursor = document.get("cursor")
    if isinstance(cursor, dict) and isinstance(cursor.get("id"), int):
        cursor["id"] = Int64(cursor["id"])
    if document.get("ok") in (0, 0.0, False) and document.get("code") is None:
        document.setdefault("codeName", "UnknownError")
        document["code"] = 8  # UnknownError
    return _encode(document, **kwargs)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    ap.add_argument("--path", help="database file for --engine sqlite")
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    args = ap.parse_args()
    if args.engine == "sqlite" and not args.path:
        ap.error("--engine sqlite needs --path")
    proxy.decode_op_msg, proxy.encode_op_msg_response = decode_op_msg, encode_op_msg_response

    engine = SQLiteEngine(path=args.path) if args.engine == "sqlite" else MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=args.port)
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=watch, daemon=True).start()
    address = await server.start()
    print(f"ready {address.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


if __name__ == "__main__":
    asyncio.run(main())
