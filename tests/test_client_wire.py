"""What the model client puts on the wire: a real socket on 127.0.0.1 reading it as a model
server would."""

from __future__ import annotations

import json
import socket
import threading

from osmo_store.eval.client import ChatClient

ANSWER = json.dumps(
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "2"}}]}
).encode()


def test_a_request_reaches_the_model_in_one_write() -> None:
    """Head and body in one write (urllib3 writes them apart): the model server is woken
    once per request, not twice, and the client makes one send, not two (each a release
    of the interpreter lock, which `client.chat` and the eval's endpoint both wait for)."""
    listener = socket.create_server(("127.0.0.1", 0))
    whole_at_once: list[bool] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(65536)  # wakes at the first bytes to arrive
                if not data:
                    return
                first = data
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                whole_at_once.append(len(first) == len(head) + 4 + length)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with ChatClient(f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0) as client:
            for i in range(20):
                request = {"model": "m", "messages": [{"role": "user", "content": f"{i}?"}]}
                assert client.chat(request).message["content"] == "2"
    finally:
        listener.close()
    thread.join(timeout=60)
    assert whole_at_once == [True] * 20
