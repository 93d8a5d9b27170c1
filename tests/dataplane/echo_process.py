"""An echo backend in its own process that exits abruptly (os._exit) after N streamed messages.

Used where a test needs a backend to really die: its connection drops with no
trailers, as when a GPU server crashes.
"""
import asyncio
import os
import sys

import grpc


def _ident(x: bytes) -> bytes:
    return x


async def main(die_after: int) -> None:
    async def server_stream(request: bytes, context):
        count, size = map(int, request.decode().split(",")[:2])
        for i in range(count):
            if i == die_after:
                await asyncio.sleep(0.05)  # let the messages already written reach the socket
                os._exit(1)
            yield (b"%08d" % i) + b"x" * max(0, size - 8)

    server = grpc.aio.server()
    handlers = {"ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, _ident, _ident)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
