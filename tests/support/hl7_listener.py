"""A real MLLP listener for the HL7 tests: python-hl7's asyncio server, in a thread of its own.

It parses every message it receives with python-hl7 (a library pneumoscan's sender does not
use) and answers with the acknowledgement code the test asks for, AA by default.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import hl7
import hl7.mllp


class Listener:
    """``with Listener() as listener``: ``listener.port``, ``listener.received`` (parsed
    messages, in order), ``listener.answers`` (codes to answer next; AA once empty),
    ``listener.delay`` (seconds before each answer) and ``listener.acknowledged``. Given a
    ``port`` and a ``received`` list, a new listener takes up where a stopped one left off."""

    def __init__(self, port: int = 0, received: list[hl7.Message] | None = None) -> None:
        self.received: list[hl7.Message] = [] if received is None else received
        self.answers: deque[str] = deque()
        self.acknowledged: list[hl7.Message] = []  # answered on a connection still open
        self.delay = 0.0  # seconds before each answer
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.received.append(message)
                if self.delay:
                    await asyncio.sleep(self.delay)
                if reader.at_eof() or writer.is_closing():
                    break  # the sender went away before the answer: nothing was acknowledged
                code = self.answers.popleft() if self.answers else "AA"
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
                self.acknowledged.append(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await hl7.mllp.start_hl7_server(self._handle, host="127.0.0.1", port=self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def __enter__(self) -> Listener:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_) -> None:
        async def shutdown() -> None:
            self._server.close()
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
