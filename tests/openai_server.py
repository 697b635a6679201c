"""An OpenAI-compatible HTTP server on loopback for the tests: the documented response shapes of chat
completions (structured outputs), audio speech (WAV) and image generation (base64 PNG), with scripted faults (429 with retry-after, 500, an answer that is
not the JSON asked for, a timeout, a refused key, an unknown model). The real `openai` client talks
to it; no test reaches the internet."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import soundfile
from PIL import Image

KEY = "sk-test-0123456789abcdef"  # the key the server accepts; tests check it never leaks
BOX_LINE = re.compile(r"^(\d+): (\S+) at x=(\d+), y=(\d+), width=(\d+), height=(\d+)$", re.M)

Verdict = Callable[[str, tuple[int, int, int, int]], dict[str, Any]]  # (class, box) -> verdict, class_name, reason


def accept_all(class_name: str, box: tuple[int, int, int, int]) -> dict[str, Any]:
    return {"verdict": "accept", "class_name": class_name, "reason": "looks right"}


class OpenAiServer:
    """`with OpenAiServer() as server:` serves at `server.url`; `server.faults` (a deque of "429",
    "500", "garbage", "timeout", "401", "404") are answered to the next requests, in order;
    `server.verdict` answers each box of a verification request; `server.requests` is what came in."""

    def __init__(self, verdict: Verdict = accept_all, timeout_seconds: float = 3.0, delay_seconds: float = 0.0) -> None:
        self.verdict = verdict
        self.timeout_seconds = timeout_seconds
        self.delay_seconds = delay_seconds  # how long each answer takes: requests overlap
        self.in_flight = self.most_in_flight = 0
        self.faults: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAiServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "authorization": self.headers.get("Authorization")})
                    fault = server.faults.popleft() if server.faults else None
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_seconds)
                    self._answer(body, fault)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body: dict[str, Any], fault: str | None) -> None:
                if self.headers.get("Authorization") != f"Bearer {KEY}" or fault == "401":
                    return self._error(401, "invalid_api_key", "Incorrect API key provided")
                if fault == "404":
                    return self._error(404, "model_not_found", f"The model {body.get('model')} does not exist")
                if fault == "429":
                    return self._error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "20"})
                if fault == "500":
                    return self._error(500, "server_error", "The server had an error", {"retry-after-ms": "20"})
                if fault == "timeout":
                    time.sleep(server.timeout_seconds)
                if self.path.endswith("/chat/completions"):
                    return self._json(200, _chat_completion(body, server.verdict, garbage=fault == "garbage"))
                if self.path.endswith("/images/generations"):
                    return self._json(200, _image(body, garbage=fault == "garbage"))
                if self.path.endswith("/audio/speech"):
                    return self._bytes(200, b"not audio" if fault == "garbage" else _speech(body), "audio/wav")
                return self._error(404, "not_found", f"no route {self.path}")

            def _bytes(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

            def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
                self._json(status, {"error": {"message": message, "type": code, "param": None, "code": code}},
                           headers)

        return Handler


def speech_pitch(voice: str) -> float:
    """The tone each voice "speaks" in: a test can tell the voices apart."""
    return 200.0 + 40 * (sum(map(ord, voice)) % 10)


def _speech(body: dict[str, Any]) -> bytes:
    """A WAV of 24 kHz tone bursts, one per character of the input, shorter at a higher speed."""
    rate, per_character = 24000, 0.06 / float(body.get("speed", 1.0))
    t = np.arange(int(rate * per_character * len(body["input"]))) / rate
    audio = 0.4 * np.sin(2 * np.pi * speech_pitch(body["voice"]) * t) * (np.sin(2 * np.pi * 4 * t) > -0.5)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _image(body: dict[str, Any], garbage: bool) -> dict[str, Any]:
    """An image generation: a PNG of the asked size, its colour drawn from the prompt."""
    width, height = (int(v) for v in body.get("size", "64x64").split("x"))
    colour = np.frombuffer(hashlib.sha256(body["prompt"].encode()).digest()[:3], np.uint8)
    pixels = np.broadcast_to(colour, (height, width, 3)).copy()
    pixels[height // 4: height // 2, width // 4: width // 2] = 255 - colour  # something to look at
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    data = b"not an image" if garbage else png.getvalue()
    return {"created": 0, "data": [{"b64_json": base64.b64encode(data).decode()}],
            "usage": {"input_tokens": 20, "output_tokens": 272, "total_tokens": 292}}


def _chat_completion(body: dict[str, Any], verdict: Verdict, garbage: bool) -> dict[str, Any]:
    """A chat completion answering a verification request: each listed box gets `verdict`'s answer."""
    text = next(part["text"] for message in body["messages"] if isinstance(message["content"], list)
                for part in message["content"] if part["type"] == "text")
    boxes = [(int(number), name, tuple(int(v) for v in rest)) for number, name, *rest in BOX_LINE.findall(text)]
    answer = {"labels": [{"box": number, **verdict(name, box)} for number, name, box in boxes]}
    content = "Sure! Here are the verdicts you asked for." if garbage else json.dumps(answer)
    prompt_tokens, completion_tokens = 300 + 40 * len(boxes), 25 * len(boxes)
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
