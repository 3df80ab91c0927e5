"""What the scripted Anthropic server sees and how a test decides what it answers.

A responder is a function of one parsed `MessagesRequest`. Many units run concurrently against one
server, so a script is chosen per conversation by the text of the first user message (which carries
the unit's prompt) and indexed by `turn`, the number of assistant messages so far. The real CLI
prepends `<system-reminder>` blocks to the prompt and states its working directory in an
environment section; `first_user_text` and `cwd` see through both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_batch.testing.anthropic_replies import Reply

_SYSTEM_REMINDER = "<system-reminder>"
_CWD_LINE = re.compile(r"Primary working directory: (\S[^\n]*)")


@dataclass
class MessagesRequest:
    """One received request, parsed. Indexing (`req["model"]`) reads the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)

    @property
    def route(self) -> str:
        """The path without its query string (the CLI sends `/v1/messages?beta=true`)."""
        return self.path.split("?", 1)[0]

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    @property
    def turn(self) -> int:
        """Assistant messages already in the conversation: 0 for the first model call."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def first_user_text(self) -> str:
        """The text of the first user message, without the CLI's injected `<system-reminder>`s.

        The CLI prepends reminder blocks to the user's prompt; dropping them leaves the unit's own
        prompt, which is what a per-conversation script wants to match on.
        """
        for m in self.messages:
            if m.get("role") == "user":
                texts = [t for t in _texts(m.get("content")) if not t.lstrip().startswith(_SYSTEM_REMINDER)]
                return "\n".join(texts)
        return ""

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return "\n".join(_texts(m.get("content")))
        return ""

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """tool_result blocks of the last user message: {tool_use_id, is_error, text}."""
        for m in reversed(self.messages):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            blocks = content if isinstance(content, list) else []
            return [
                {
                    "tool_use_id": b.get("tool_use_id"),
                    "is_error": bool(b.get("is_error")),
                    "text": "\n".join(_texts(b.get("content"))),
                }
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
        return []

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.body.get("tools") or [] if isinstance(t, dict)]

    @property
    def cwd(self) -> str | None:
        """The agent's working directory, as the CLI states it in its environment section."""
        texts = _texts(self.body.get("system"))
        for m in self.messages:
            texts.extend(_texts(m.get("content")))
        for text in texts:
            if found := _CWD_LINE.search(text):
                return found.group(1).strip()
        return None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"]


Responder = Callable[[MessagesRequest], "Reply | Sequence[Reply]"]


def echo_responder(request: MessagesRequest) -> Reply:
    """Answer with text derived from the prompt, so each unit's output is checkable."""
    prompt = " ".join(request.first_user_text.split())
    return Reply.text(f"DONE: {prompt[:40]}")


def write_file_responder(request: MessagesRequest) -> Reply:
    """Turn 0: Write `result.txt` in the agent's cwd with the prompt; then finish with text."""
    prompt = " ".join(request.first_user_text.split())
    if request.turn == 0:
        cwd = request.cwd or "."
        return Reply.tool_use("Write", {"file_path": f"{cwd}/result.txt", "content": f"{prompt}\n"})
    return Reply.text(f"DONE: {prompt[:40]}")


class ScriptedConversation:
    """Replies for one conversation, indexed by turn, for the requests `when` selects.

    `when` is a substring of (or a predicate on) `first_user_text`; None matches every request.
    An entry may be a list: the first request for that turn gets item 0, a client retry of the same
    turn item 1, and so on (the last repeats), which scripts "529, then success". Turns past the
    script get `after_end`.
    """

    def __init__(
        self,
        replies: Sequence[Reply | Sequence[Reply]],
        *,
        when: str | Callable[[str], bool] | None = None,
        after_end: Reply | None = None,
    ) -> None:
        self.replies = list(replies)
        self.when = when
        self.after_end = after_end or Reply.text("DONE")

    def matches(self, request: MessagesRequest) -> bool:
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return self.when in request.first_user_text
        return bool(self.when(request.first_user_text))

    def __call__(self, request: MessagesRequest) -> Reply | Sequence[Reply]:
        if request.turn < len(self.replies):
            return self.replies[request.turn]
        return self.after_end


def scripted(*conversations: ScriptedConversation, default: Responder = echo_responder) -> Responder:
    """A responder that hands each request to the first conversation that matches it."""

    def respond(request: MessagesRequest) -> Reply | Sequence[Reply]:
        for conv in conversations:
            if conv.matches(request):
                return conv(request)
        return default(request)

    return respond
